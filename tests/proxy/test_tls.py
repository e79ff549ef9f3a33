"""Client-facing and upstream TLS contexts, and the self-signed certificate of a first run.

SNI selection, reload and version refusal over real connections are in tests/tls/.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from popproxy.policy import Upstream
from popproxy.proxy.tls import (
    TLS13_SESSION_TICKETS,
    CertPair,
    TlsConfigError,
    build_server_context,
    fingerprint,
    generate_self_signed,
    upstream_context,
)


def test_self_signed_certificate_generated_once(tmp_path: Path) -> None:
    pair = generate_self_signed(tmp_path / "state")
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert pair.key.stat().st_mode & 0o077 == 0  # the key is private to its owner
    again = generate_self_signed(tmp_path / "state")
    assert again.cert.read_bytes() == pair.cert.read_bytes()  # reused, not regenerated
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint(pair.cert))


@pytest.mark.parametrize(("version", "minimum"), [("TLSv1.2", ssl.TLSVersion.TLSv1_2),
                                                  ("TLSv1.3", ssl.TLSVersion.TLSv1_3)])
def test_server_context_hardening(tmp_path: Path, version: str,
                                  minimum: ssl.TLSVersion) -> None:
    ctx = build_server_context((generate_self_signed(tmp_path),), version)
    assert ctx.minimum_version == minimum
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.num_tickets == TLS13_SESSION_TICKETS
    assert ctx.sni_callback is not None


def test_a_missing_key_names_both_files(tmp_path: Path) -> None:
    pair = generate_self_signed(tmp_path)
    broken = CertPair(pair.cert, tmp_path / "missing.key", ("mail.example",))
    with pytest.raises(TlsConfigError, match=r"selfsigned\.crt / .*missing\.key"):
        build_server_context((broken,), "TLSv1.2")


def test_upstream_context_verifies_unless_told_not_to() -> None:
    strict = upstream_context(Upstream(host="mail.example", mode="tls"))
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_2
    lax = upstream_context(Upstream(host="mail.example", mode="tls", verify=False,
                                    tls_min_version="TLSv1.3"))
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname
    assert lax.minimum_version == ssl.TLSVersion.TLSv1_3
