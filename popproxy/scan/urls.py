"""URL strings -> the parts the link rules look at (scheme, userinfo, host in both forms)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from popproxy.scan import hosts

# Schemes that run code or carry a whole document inside the link instead of naming a server.
SCRIPT_SCHEMES = frozenset({"javascript", "vbscript", "livescript"})
INLINE_SCHEMES = frozenset({"data", "blob"})
WEB_SCHEMES = frozenset({"http", "https"})

# RFC 1035 section 2.3.4: a DNS name has at most 255 octets; longer "hosts" are garbage.
_MAX_HOST = 255


@dataclass(frozen=True, slots=True)
class UrlInfo:
    """The parts of one URL.

    Attributes:
        scheme: lower-case scheme ("" for a relative link).
        host: lower-case ASCII (punycode) host, "" when none.
        display_host: the host as a person would read it (punycode decoded).
        userinfo: text before "@" in the authority, "" when none.
        ip: the address when the host is an IP literal in any spelling.
    """

    scheme: str
    host: str
    display_host: str
    userinfo: str
    ip: hosts.IpHost | None
    path: str = ""


def parse_url(url: str) -> UrlInfo | None:
    """Split a URL; None for text that is no URL at all (no scheme, unparseable)."""
    text = url.strip().replace("\\", "/")
    scheme, sep, rest = text.partition(":")
    scheme = "".join(scheme.split()).lower()  # browsers drop whitespace inside "java\tscript:"
    if not sep or not scheme.isascii() or not scheme.isalpha():
        return None
    if scheme not in WEB_SCHEMES and scheme != "ftp":
        return UrlInfo(scheme, "", "", "", None)
    try:
        parts = urlsplit("http:" + rest.lstrip())
    except ValueError:
        return None
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    host = _host_of(hostport)
    if not host or len(host) > _MAX_HOST:
        return None
    ascii_host = hosts.to_ascii(host)
    return UrlInfo(
        scheme=scheme,
        host=ascii_host,
        display_host=hosts.to_unicode(host) if host.isascii() else host,
        userinfo=unquote(userinfo),
        ip=hosts.parse_ip_host(ascii_host),
        path=parts.path,
    )


def _host_of(hostport: str) -> str:
    host = unquote(hostport).strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    host = host.split(":", 1)[0]
    # Full stops other than U+002E that IDNA maps to "." (UTS 46): attackers use them to hide
    # a host's structure from naive parsers.
    for dot in ("\u3002", "\uff0e", "\uff61"):
        host = host.replace(dot, ".")
    return host.rstrip(".")
