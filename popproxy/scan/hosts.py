"""Host names: IP literals in every inet_aton spelling, IDNs, and registrable domains.

Registrable domains come from the Public Suffix List (``publicsuffixlist``, which ships the list
and is updated by its maintainer): the full list (with private suffixes such as github.io) tells
tenants of a hosting platform apart, the ICANN-only list tells who owns a brand-like label.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import idna
from publicsuffixlist import PublicSuffixList

_PSL_FULL = PublicSuffixList()
_PSL_ICANN = PublicSuffixList(only_icann=True)

# One inet_aton component: hex (0x..), octal (leading 0) or decimal.  Browsers accept all of them
# (WHATWG URL "IPv4 number parser"), so http://0xC6.51.100.7/ and http://3325256711/ both open
# an IP address.
_IPV4_PART = re.compile(r"^(?:0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")
_PLAIN_DECIMAL = re.compile(r"^(?:0|[1-9][0-9]{0,2})$")

# Cache sizes: distinct hosts per process are bounded by the mail seen; 8192 entries cost < 2 MB
# and cover the hosts that repeat across messages (trackers, CDNs, feeds of the same campaign).
_CACHE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class IpHost:
    """A host that is an IP address; ``obfuscated`` when not written as plain dotted decimal."""

    address: str
    obfuscated: bool


def parse_ip_host(host: str) -> IpHost | None:
    """Parse a URL host as an IP address, accepting every spelling a browser accepts.

    Args:
        host: lower-case host, IPv6 in brackets.

    Returns:
        The address, or None when the host is a name.
    """
    if host.startswith("[") and host.endswith("]"):
        try:
            return IpHost(str(ipaddress.IPv6Address(host[1:-1].split("%")[0])), False)
        except ValueError:
            return None
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(p) for p in parts):
        return None
    values = [_ipv4_part_value(p) for p in parts]
    value = 0
    for v in values[:-1]:
        if v > 0xFF:
            return None
        value = value * 256 + v
    last_bytes = 5 - len(values)
    if values[-1] >= 256**last_bytes:
        return None
    value = value * 256**last_bytes + values[-1]
    plain = len(parts) == 4 and all(_PLAIN_DECIMAL.match(p) for p in parts)
    return IpHost(str(ipaddress.IPv4Address(value)), not plain)


def _ipv4_part_value(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part[1:], 8)
    return int(part)


@lru_cache(maxsize=_CACHE_SIZE)
def to_unicode(host: str) -> str:
    """Show a host the way a browser address bar might: punycode labels decoded.

    Labels that fail IDNA decoding are kept as they are (they cannot be registered anyway).
    """
    if "xn--" not in host:
        return host
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(idna.IDNAError, UnicodeError, ValueError):
                label = idna.decode(label)
        labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=_CACHE_SIZE)
def to_ascii(host: str) -> str:
    """The punycode form of a host, used for feed and list look-ups (lists are ASCII)."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return host


@lru_cache(maxsize=_CACHE_SIZE)
def registrable(host: str) -> str:
    """The registrable domain with private suffixes honoured (x.github.io -> x.github.io)."""
    return _PSL_FULL.privatesuffix(host) or host


@lru_cache(maxsize=_CACHE_SIZE)
def owner_domain(host: str) -> str:
    """The registrable domain under ICANN suffixes only (x.github.io -> github.io)."""
    return _PSL_ICANN.privatesuffix(host) or host


def owner_label(host: str) -> str:
    """The label the owner registered: "paypal" for login.paypal.co.uk."""
    return owner_domain(host).split(".", 1)[0]


def parents(host: str) -> list[str]:
    """The host and each parent domain down to two labels: a.b.c.d -> [a.b.c.d, b.c.d, c.d]."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


_PSL_KNOWN = PublicSuffixList(accept_unknown=False)


@lru_cache(maxsize=_CACHE_SIZE)
def known_suffix(host: str) -> bool:
    """True when the host ends in a suffix on the Public Suffix List ("invoice.pdf" does not)."""
    return _PSL_KNOWN.publicsuffix(host) is not None


# Addresses no one on the internet can reach: a link to one cannot be a phishing page the
# victim opens from anywhere.  Support mail and list posts about lab equipment are full of
# them (a router's admin page at 192.168.1.1, a device at 10.0.0.2).  Ranges: RFC 1918
# private, RFC 6598 carrier-grade NAT, loopback (RFC 1122), "this network" 0/8 (browsers open
# 0.0.0.0 as the local machine), RFC 3927 link-local, and for IPv6 loopback, unspecified,
# RFC 4193 unique-local and link-local.  Documentation ranges (198.51.100.0/24 ...) are NOT
# here: they stand for public addresses in examples.
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
        "0.0.0.0/8", "169.254.0.0/16", "::1/128", "::/128", "fc00::/7", "fe80::/10",
    )
)


def is_local_address(address: str) -> bool:
    """True for an address only a local network reaches (private, loopback, link-local).

    IPv4-mapped IPv6 addresses (::ffff:10.0.0.1) are judged by their IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in _LOCAL_NETWORKS)


# Host name labels: RFC 1123 letters, digits and hyphens (IDNs arrive as punycode), plus "_",
# which DNS allows and some real hosts use, 1-63 of them.  A label with anything else ("="
# left over from a quoted-printable soft line break, "%", a quote) is an artefact of broken
# encoding: no registrar hands such a name out and no resolver finds it.  Where a hyphen may
# stand is not checked: a sub-domain label such as "paypal-" under an attacker's own zone
# resolves all the same, so it must still be judged as a name.
_HOST_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")


@lru_cache(maxsize=_CACHE_SIZE)
def is_host_name(host: str) -> bool:
    """True when ``host`` (lower-case ASCII, no trailing dot) is a well-formed DNS name."""
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in host.split("."))
