"""Redirectors of big platforms unwrapped to the URL they lead to, where it is in the link.

Google's ``/url?q=``, Bing's ``/ck/a?u=a1<base64>``, Microsoft SafeLinks, Proofpoint URL
Defense, Facebook's ``l.php?u=`` and the like are hosts every reader trusts.  Phishing hides
behind them (the host judged is google.com), and honest mail rewritten by a mail gateway
(SafeLinks, URL Defense) looks like a link whose text shows another host than its target.  So
the link rules judge the target, not the wrapper: :func:`unwrap_links` replaces each wrapped
link by its final URL (anchor text and where it was found kept), and the wrapper itself counts
for nothing.  Opaque wrappers (t.co, most newsletter click trackers) carry no target and are left
as they are.

Every URL is parsed by the WHATWG URL Standard (``ada-url``, as :mod:`.urls`); a wrapper inside
a wrapper is unwrapped again, at most MAX_UNWRAPS times.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import unquote

import ada_url

from popproxy.scan import hosts
from popproxy.scan.extract import Link

# Wrappers unwrapped in a row.  Real mail nests two at most (a SafeLinks rewrite of a Proofpoint
# rewrite of a Google redirect); a deeper chain is built to waste time, and what is left after
# this many steps is judged as it is.
MAX_UNWRAPS = 4

# Characters of a URL looked at for unwrapping.  A target of several kilobytes is no link a
# browser or a mail gateway produces (Internet Explorer stopped at 2083, SafeLinks output stays
# far below); bounds the percent- and base64-decoding done per link.
MAX_WRAPPED_URL_CHARS = 16 * 1024

# Same as urls._CACHE_SIZE: one message repeats its wrapped links, campaigns repeat across.
_CACHE_SIZE = 8192

_PARTS = ("protocol", "hostname", "pathname", "search")

# Substrings one of which every wrapper URL contains (lower case): a cheap first test, so the
# thousands of links of a newsletter are not parsed twice.
_MARKERS = (
    "google.", "bing.com", "safelinks.protection.outlook.com", "urldefense", "facebook.com",
    "instagram.com", "youtube.com", "linkedin.com", "slack-redir.net", "awstrack.me",
    "googleadservices.com", "cudasvc.com", "mimecastprotect.com", "safelinks.protection",
    "translate.goog", "l.wl.co",
)

Extractor = Callable[[str, str], str | None]  # (pathname, search) -> the wrapped URL or None


def _param(search: str, *keys: str) -> str | None:
    """The first non-empty value of the first key present (percent-decoded by ada)."""
    params = ada_url.URLSearchParams(search.removeprefix("?"))
    for key in keys:
        value = params.get(key)
        if value:
            return value
    return None


def _google(path: str, search: str) -> str | None:
    if path == "/url":
        return _param(search, "q", "url")
    # Google AMP viewer: /amp/s/example.test/page opens https://example.test/page.
    if path.startswith("/amp/s/"):
        return "https://" + path[len("/amp/s/") :]
    if path.startswith("/amp/"):
        return "http://" + path[len("/amp/") :]
    return None


def _bing(path: str, search: str) -> str | None:
    if path != "/ck/a":
        return None
    value = _param(search, "u")
    if value is None or not value.startswith("a1"):
        return None
    data = value[2:]
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _query(*keys: str, path: str | None = None) -> Extractor:
    """A wrapper with the target in one of ``keys`` of the query (on ``path`` if given)."""

    def extract(pathname: str, search: str) -> str | None:
        if path is not None and pathname != path:
            return None
        return _param(search, *keys)

    return extract


def _proofpoint(path: str, search: str) -> str | None:
    if path.startswith("/v3/__"):
        return _proofpoint_v3(path[len("/v3/__") :] + search)
    if path in ("/v2/url", "/v1/url"):
        value = _param(search, "u")
        if value is None:
            return None
        if path == "/v2/url":  # v2 writes "%" as "-" and "/" as "_"
            value = unquote(value.replace("-", "%").replace("_", "/"))
        return value
    return None


# URL Defense v3 replaces some characters of the URL by "*" (one) or "**x" (a run, its length
# coded by x) and appends them, base64url, after "__;"  (Proofpoint's published decoder).
_V3_RUNS = {c: n for n, c in enumerate(string.ascii_uppercase + string.ascii_lowercase
                                       + string.digits + "-_", start=2)}


def _proofpoint_v3(rest: str) -> str | None:
    end = rest.find("__;")
    if end < 0:  # cut short (an anchor text shows a link's first characters only)
        end = len(rest)
    url = unquote(rest[:end])
    coded = rest[end + 3 :].split("!", 1)[0]
    try:
        replaced = base64.urlsafe_b64decode(coded + "==").decode("utf-8")
    except (binascii.Error, ValueError):
        replaced = ""
    out: list[str] = []
    used = i = 0
    while i < len(url):
        if url[i] != "*":
            out.append(url[i])
            i += 1
            continue
        if url.startswith("**", i) and i + 2 < len(url) and url[i + 2] in _V3_RUNS:
            run = _V3_RUNS[url[i + 2]]
            out.append(replaced[used : used + run])
            used, i = used + run, i + 3
        else:
            out.append(replaced[used : used + 1])
            used, i = used + 1, i + 1
    return "".join(out)


def _aws_tracking(path: str, search: str) -> str | None:
    # Amazon SES click tracking: /L0/<percent-encoded target>/1/...
    if not path.startswith("/L0/"):
        return None
    return unquote(path[len("/L0/") :].split("/", 1)[0])


def _is_google(host: str) -> bool:
    """google.com, www.google.co.uk ...: the label "google" right under a public suffix."""
    owner = hosts.owner_domain(host)
    return owner.startswith("google.") and hosts.known_suffix(owner)


def _mimecast(path: str, search: str) -> str | None:
    # Mimecast URL Protect keeps the target opaque but names its host: /s/<id>?domain=host.
    domain = _param(search, "domain")
    return "https://" + domain if domain and path.startswith("/s/") else None


_SAFELINKS = (".safelinks.protection.outlook.com", ".safelinks.protection.office365.us")
_TRANSLATE_PROXY = ".translate.goog"


def _translate_proxy(host: str, path: str, search: str) -> str | None:
    """Google Translate's proxy serves evil.example at evil-example.translate.goog (a "-" of the
    name doubled, each "." written "-")."""
    label = host.removesuffix(_TRANSLATE_PROXY)
    if not label or "." in label:
        return None
    name = label.replace("--", "\0").replace("-", ".").replace("\0", "-")
    return f"https://{name}{path}{search}"


# (host test, extractor).  Host tests take the lower-case ASCII host.
_WRAPPERS: tuple[tuple[Callable[[str], bool], Extractor], ...] = (
    (_is_google, _google),
    (lambda h: h in ("bing.com", "www.bing.com"), _bing),
    (lambda h: h.endswith(_SAFELINKS), _query("url")),
    (lambda h: h in ("urldefense.com", "urldefense.proofpoint.com", "urldefense.us"),
     _proofpoint),
    (lambda h: h in ("l.facebook.com", "lm.facebook.com", "l.messenger.com", "l.wl.co"),
     _query("u", path="/l.php")),
    (lambda h: h == "l.instagram.com", _query("u")),
    (lambda h: h in ("www.youtube.com", "youtube.com"), _query("q", path="/redirect")),
    (lambda h: h in ("www.linkedin.com", "linkedin.com"),
     _query("url", path="/redir/redirect")),
    (lambda h: h == "slack-redir.net", _query("url", path="/link")),
    (lambda h: h.endswith(".awstrack.me"), _aws_tracking),
    (lambda h: h in ("www.googleadservices.com", "googleadservices.com"),
     _query("adurl", path="/pagead/aclk")),
    (lambda h: h == "linkprotect.cudasvc.com", _query("a", path="/url")),
    (lambda h: h.endswith(".mimecastprotect.com"), _mimecast),
)


def _target(url: str) -> str | None:
    """The URL one wrapper leads to, or None when ``url`` is no wrapper with its target in it."""
    lower = url.lower()
    if not any(marker in lower for marker in _MARKERS):
        return None
    try:
        parts = ada_url.parse_url(url, attributes=_PARTS)
    except ValueError:
        return None
    if str(parts["protocol"]) not in ("http:", "https:"):
        return None
    host = str(parts["hostname"]).rstrip(".")
    if host.endswith(_TRANSLATE_PROXY):
        return _translate_proxy(host, str(parts["pathname"]), str(parts["search"]))
    for matches, extract in _WRAPPERS:
        if matches(host):
            target = extract(str(parts["pathname"]), str(parts["search"]))
            return target.strip() if target and target.strip() else None
    return None


@lru_cache(maxsize=_CACHE_SIZE)
def _unwrap_once(url: str) -> str | None:
    """:func:`_target` of a URL up to MAX_WRAPPED_URL_CHARS (the cache holds no longer ones)."""
    return None if len(url) > MAX_WRAPPED_URL_CHARS else _target(url)


def _still_wrapped(url: str) -> bool:
    """``url`` is a wrapper with a target (over-long ones included: unread, not clean)."""
    return _target(url) not in (None, url) if len(url) > MAX_WRAPPED_URL_CHARS else (
        _unwrap_once(url) not in (None, url)
    )


def unwrap(url: str) -> str:
    """The final URL behind at most MAX_UNWRAPS nested wrappers (``url`` itself when none)."""
    return _unwrap_chain(url)[0]


def _unwrap_chain(url: str) -> tuple[str, bool]:
    """The final URL, and whether it is still a wrapper after MAX_UNWRAPS steps."""
    for _ in range(MAX_UNWRAPS):
        target = _unwrap_once(url)
        if target is None or target == url:
            return url, len(url) > MAX_WRAPPED_URL_CHARS and _still_wrapped(url)
        url = target
    return url, _still_wrapped(url)


@dataclass(slots=True)
class Unwrapped:
    """The links of a message with wrapped URLs replaced by their targets.

    ``too_deep`` names a link still wrapped after MAX_UNWRAPS steps (its host, for the detail):
    no gateway nests that deep, and what it hides went unjudged, so the scanner reports it as
    an exhausted limit (``limit-redirects``), not as a clean wrapper.
    """

    links: list[Link] = field(default_factory=list)
    too_deep: str = ""
    open_redirect: str = ""  # the first search-engine or ad redirect to another site


def unwrap_links(links: Iterable[Link]) -> Unwrapped:
    """The links with every wrapped URL replaced by its target (all else kept).

    An anchor text that shows a wrapped URL is unwrapped too: a gateway that rewrites the
    text of a link as well as its target (SafeLinks, URL Defense do) shows the wrapper's host,
    and the reader reads the target in it.
    """
    out = Unwrapped()
    for link in links:
        final, deep = _unwrap_chain(link.url)
        if deep and not out.too_deep:
            out.too_deep = _host(final)
        if final != link.url and not out.open_redirect:
            out.open_redirect = _search_redirect(link.url, final)
        text = link.anchor_text
        shown = unwrap(text) if text[:4].lower() == "http" else text
        if final != link.url or shown != text:
            link = dataclasses.replace(link, url=final, anchor_text=shown[: len(text)])
        out.links.append(link)
    return out


# Redirects of search engines and ad networks (host test, path prefixes).  A sender links to its
# own site or through its own mail provider's tracker; a link that leaves mail through a
# search result or an ad click is an open redirect used to borrow a trusted host.
_SEARCH_REDIRECTS: tuple[tuple[Callable[[str], bool], tuple[str, ...]], ...] = (
    (_is_google, ("/url", "/amp/")),
    (lambda h: h in ("bing.com", "www.bing.com"), ("/ck/a",)),
    (lambda h: h in ("www.googleadservices.com", "googleadservices.com"), ("/pagead/aclk",)),
)


def _search_redirect(url: str, final: str) -> str:
    """The host of ``url`` when it is a search or ad redirect to another owner's site, or ""."""
    try:
        parts = ada_url.parse_url(url, attributes=("hostname", "pathname"))
    except ValueError:
        return ""
    host, path = str(parts["hostname"]), str(parts["pathname"])
    if host.endswith(_TRANSLATE_PROXY):
        return host  # a proxy that serves any site under Google's name
    for matches, prefixes in _SEARCH_REDIRECTS:
        if matches(host) and path.startswith(prefixes):
            target = _host(final)
            same = bool(target) and hosts.owner_label(target) == hosts.owner_label(host)
            return "" if same else host
    return ""


def _host(url: str) -> str:
    try:
        return str(ada_url.parse_url(url, attributes=("hostname",))["hostname"])
    except ValueError:
        return ""
