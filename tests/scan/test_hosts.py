"""Host parsing: IP literals in all spellings, IDN, registrable domains."""

from __future__ import annotations

import pytest

from popproxy.scan import hosts


@pytest.mark.parametrize(
    ("host", "address", "obfuscated"),
    [
        ("198.51.100.7", "198.51.100.7", False),
        ("3325256711", "198.51.100.7", True),  # one 32-bit decimal
        ("0xc6336407", "198.51.100.7", True),  # one hex number
        ("0306.0063.0144.07", "198.51.100.7", True),  # octal parts
        ("0xc6.51.100.7", "198.51.100.7", True),  # mixed
        ("198.51.25607", "198.51.100.7", True),  # three parts, last fills two bytes
        ("[2001:db8::1]", "2001:db8::1", False),
    ],
)
def test_ip_spellings(host: str, address: str, obfuscated: bool) -> None:
    ip = hosts.parse_ip_host(host)
    assert ip is not None
    assert (ip.address, ip.obfuscated) == (address, obfuscated)


@pytest.mark.parametrize(
    "host", ["example.test", "256.1.1.1", "1.2.3.4.5", "0x1g.2.3.4", "09.1.1.1"]
)
def test_names_are_not_ips(host: str) -> None:
    assert hosts.parse_ip_host(host) is None


def test_registrable_and_owner() -> None:
    assert hosts.registrable("a.b.example.co.uk") == "example.co.uk"
    assert hosts.registrable("tenant.github.io") == "tenant.github.io"
    assert hosts.owner_domain("tenant.github.io") == "github.io"
    assert hosts.owner_label("login.paypal.co.uk") == "paypal"


def test_idn_round_trip() -> None:
    assert hosts.to_unicode("xn--bcher-kva.example") == "bücher.example"
    assert hosts.to_ascii("bücher.example") == "xn--bcher-kva.example"
