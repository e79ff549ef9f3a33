"""URL strings -> the parts the link rules look at (scheme, userinfo, host in both forms).

URLs are parsed by the WHATWG URL Standard, the rules browsers follow (``ada-url``), so the
host judged is the host a click opens: ``https:evil.test``, ``http:/evil.test``,
``https:\\\\evil.test``, leading control characters and spaces, tabs and newlines inside, an
upper-case scheme, percent-encoded or full-width host characters and every IPv4 spelling all
come out as the browser reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

import ada_url

from popproxy.scan import hosts

# Schemes that run code or carry a whole document inside the link instead of naming a server.
SCRIPT_SCHEMES = frozenset({"javascript", "vbscript", "livescript"})
INLINE_SCHEMES = frozenset({"data", "blob"})
WEB_SCHEMES = frozenset({"http", "https"})
# Schemes whose host the link rules judge.
_HOST_SCHEMES = WEB_SCHEMES | {"ftp"}

# RFC 1035 section 2.3.4: a DNS name has at most 255 octets; longer "hosts" are garbage.
_MAX_HOST = 255

# Distinct URLs per process repeat across messages (trackers, footers, campaigns) and within one
# message (several rules parse the same link); 8192 parsed URLs cost a few MB.
_CACHE_SIZE = 8192

_PARTS = ("protocol", "hostname", "pathname")
_PARTS_WITH_USER = (*_PARTS, "username", "password")

# What the URL Standard strips from both ends (C0 controls and space) and removes inside
# (tab, LF, CR) before parsing.
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_REMOVED_INSIDE = str.maketrans("", "", "\t\n\r")


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


@lru_cache(maxsize=_CACHE_SIZE)
def parse_url(url: str) -> UrlInfo | None:
    """Split a URL as a browser does; None for text that is no URL (relative, unparseable)."""
    try:
        parts = ada_url.parse_url(url, attributes=_PARTS_WITH_USER if "@" in url else _PARTS)
    except ValueError:
        return None
    scheme = str(parts["protocol"]).removesuffix(":")
    if scheme not in _HOST_SCHEMES:
        return UrlInfo(scheme, "", "", "", None)
    # A trailing dot names the same host ("evil.test." is "evil.test").
    host = str(parts["hostname"]).rstrip(".")
    if not host or len(host) > _MAX_HOST:
        return None
    user, password = str(parts.get("username", "")), str(parts.get("password", ""))
    userinfo = unquote(user) + (":" + unquote(password) if password else "")
    return UrlInfo(
        scheme=scheme,
        host=host,
        display_host=hosts.to_unicode(host),
        userinfo=userinfo,
        ip=_ip_host(host, url),
        path=str(parts["pathname"]),
    )


def _ip_host(host: str, url: str) -> hosts.IpHost | None:
    """The address of an IP-literal host, ``obfuscated`` unless written as plain dotted decimal.

    The URL parser has already turned 0xC6.51.100.7, 3325256711, %31%39%38... or full-width
    digits into 198.51.100.7, so the spelling is judged on the host as written in ``url``.
    """
    ip = hosts.parse_ip_host(host)
    if ip is None or host.startswith("["):
        return ip
    return hosts.IpHost(ip.address, _written_host(url) != ip.address)


def _written_host(url: str) -> str:
    """The host of ``url`` as written (lower-case, no port, no trailing dot), best effort."""
    text = url.strip(_C0_AND_SPACE).translate(_REMOVED_INSIDE).replace("\\", "/")
    rest = text.partition(":")[2].lstrip("/")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    hostport = rest[:end].rpartition("@")[2]
    return hostport.partition(":")[0].lower().rstrip(".")
