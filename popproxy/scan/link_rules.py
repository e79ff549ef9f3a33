"""Signals from links: feeds, IP hosts, userinfo tricks, look-alikes, shown-versus-real."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from popproxy.scan import hosts
from popproxy.scan.extract import Link
from popproxy.scan.feeds import HostFeed
from popproxy.scan.lists import SHORTENERS, STORAGE_SUFFIXES
from popproxy.scan.lookalike import brand_match, is_official, mixed_script
from popproxy.scan.settings import ProtectedBrand
from popproxy.scan.urls import INLINE_SCHEMES, SCRIPT_SCHEMES, WEB_SCHEMES, UrlInfo, parse_url
from popproxy.scan.verdict import Signal, clean_detail, clean_evidence
from popproxy.scan.weights import weight

# Anchor text that is itself a URL or a bare host name, as a reader would take it.
_SHOWN = re.compile(
    r"(?i)^(?:(?:https?|hxxps?)://)?([a-z0-9\u00a1-\uffff](?:[a-z0-9\u00a1-\uffff.-]*)"
    r"\.[a-z\u00a1-\uffff]{2,24})\.?(?::\d{1,5})?(?:[/?#]\S*)?$"
)


_PAGE_SUFFIXES = (".html", ".htm", ".shtml", ".xhtml", ".php")


@dataclass(frozen=True, slots=True)
class LinkContext:
    """What the link rules consult besides the links."""

    feeds: Sequence[HostFeed]
    brands: tuple[ProtectedBrand, ...]
    max_links: int


def link_signals(links: Iterable[Link], ctx: LinkContext) -> list[Signal]:
    """Every signal the links of one message raise (duplicates removed later by scoring)."""
    out: list[Signal] = []
    seen: set[tuple[str, str, str]] = set()
    by_host: dict[tuple[str, str, str], list[Signal]] = {}
    for link in links:
        key = (link.url, link.source, link.anchor_text)
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > ctx.max_links:
            break
        info = parse_url(link.url)
        if info is None:
            continue
        out.extend(_one_link(link, info, ctx))
        if info.host:
            # Links of one message mostly share a few hosts: analyse each host once.
            host_key = (info.host, info.display_host, info.userinfo)
            if host_key not in by_host:
                by_host[host_key] = _host_signals(info, ctx, link_evidence(link))
                out.extend(by_host[host_key])
    return out


# Button and link wording that asks the reader to act on an account, a payment or a prize.
_ACTION_TEXT = re.compile(
    r"(?i)\b(?:verify|confirm|unlock|validate|reactivate|restore|sign\s*in|log\s*in|login|"
    r"update\s+(?:now|payment|billing|your)|pay\s+now|review\s+(?:your|now)|claim|redeem|"
    r"reschedule|track\s+(?:your\s+)?(?:package|parcel)|resgat\w*|verific\w*|confirm\w*|"
    r"atualiz\w*|acess\w*|bevestig\w*|best[äa]tig\w*|v[ée]rifi\w*)\b"
)
# Button labels are short; a long anchor is a sentence that merely contains such a word.
_MAX_ACTION_TEXT = 40


def action_link_signals(links: Iterable[Link], sender_domain: str, limit: int) -> list[Signal]:
    """link-action-foreign: a "Verify" / "Sign in" / "Pay now" anchor leads off the sender's domain.

    Args:
        links: the message's links.
        sender_domain: the From domain ("" when unknown: then nothing is judged).
        limit: links looked at, at most.
    """
    if not sender_domain:
        return []
    owner = hosts.owner_domain(sender_domain)
    for count, link in enumerate(links):
        if count >= limit:
            break
        text = link.anchor_text
        if link.source != "href" or link.attachment or not text or len(text) > _MAX_ACTION_TEXT:
            continue
        action = _ACTION_TEXT.search(text)
        if action is None:
            continue
        info = parse_url(link.url)
        if info is None or info.scheme not in WEB_SCHEMES or not info.host:
            continue
        if _broken_host(info):
            continue
        if hosts.owner_domain(info.host) != owner:
            # The rule's own keyword, not the anchor: details reach headers and logs, and the
            # house rule keeps message text out of them.
            detail = f"{action.group(0).lower()[:30]} -> {info.host}"
            return [_sig("link-action-foreign", detail, link_evidence(link))]
    return []


def shortened_hrefs(links: Iterable[Link], limit: int) -> str:
    """The shortener every web anchor of the body points to ("" unless all of them do).

    Only anchors (not URLs in running text) of the message body count: they are what a reader
    clicks without seeing the address.
    """
    found = ""
    for count, link in enumerate(links):
        if count >= limit:
            return ""
        if link.source != "href" or link.attachment:
            continue
        info = parse_url(link.url)
        if info is None or info.scheme not in WEB_SCHEMES or not info.host:
            continue
        if info.host not in SHORTENERS and hosts.registrable(info.host) not in SHORTENERS:
            return ""
        found = info.host
    return found


def _sig(name: str, detail: str, evidence: str = "") -> Signal:
    return Signal(
        name=name, weight=weight(name), detail=clean_detail(detail),
        evidence=clean_evidence(evidence),
    )


# How --explain names where a link was found (Link.source).
_LINK_PLACES = {"text": "URL in text", "href": "link", "form": "form action",
                "frame": "frame", "refresh": "refresh", "pdf": "PDF link"}


def link_evidence(link: Link) -> str:
    """The evidence of a link's signals: where the link was found, and its URL."""
    place = _LINK_PLACES.get(link.source, link.source)
    if link.attachment:
        place += " in an attachment"
    return f"{place}: {link.url}"


def _one_link(link: Link, info: UrlInfo, ctx: LinkContext) -> list[Signal]:
    out: list[Signal] = []
    seen = link_evidence(link)
    if info.scheme in SCRIPT_SCHEMES and link.source != "text":
        if not script_placeholder(link.url):
            out.append(_sig("link-script-scheme", info.scheme, seen))
    elif info.scheme in INLINE_SCHEMES and link.source != "text":
        out.append(_sig("link-data-uri", info.scheme, seen))
    if link.obfuscated:
        out.append(_sig("link-obfuscated", info.host, seen))
    if link.source == "href" and not _broken_host(info):
        out.extend(_shown_versus_real(link, info, ctx.brands))
    elif link.source == "form" and info.host and not link.attachment:
        out.append(_sig("form-remote-action", info.host, seen))
    if link.source in ("href", "text", "qr", "pdf") and _storage_page(info):
        out.append(_sig("link-storage-page", info.host, seen))
    return out


def _ip_rule(ip: hosts.IpHost) -> str:
    """link-ip-obfuscated, link-ip-private (a local network's address) or link-ip-host."""
    if ip.obfuscated:
        return "link-ip-obfuscated"  # evasion, wherever the address points
    return "link-ip-private" if hosts.is_local_address(ip.address) else "link-ip-host"


def _broken_host(info: UrlInfo) -> bool:
    """A named host that is no host name ("www.bank.example=" from broken quoted-printable).

    Such a link opens nothing, and its host is a parsing artefact: judging it as a name would
    take "example.com=" for a look-alike of example.com or an anchor "example.com" for a
    mismatch.  A blocklist may still list its registrable domain, so feeds are consulted.
    """
    return bool(info.host) and info.ip is None and not hosts.is_host_name(info.host)


# What follows "javascript:" in a link that does nothing: Google Groups writes href="javascript:"
# over hidden addresses, and pages use "javascript:void(0)" or "javascript:;" as a dead link.
_SCRIPT_NOOP = re.compile(r"^(?:void\s*\(?\s*0\s*\)?|undefined)?\s*;?$")
# The URL Standard strips C0 controls and space around a URL and tab/CR/LF inside it.
_URL_TRIM = "".join(map(chr, range(0x21)))
_URL_REMOVED = str.maketrans("", "", "\t\r\n")


def script_placeholder(url: str) -> bool:
    """True for a script link whose code, percent-decoded, is empty or a no-op (void(0))."""
    code = url.strip(_URL_TRIM).translate(_URL_REMOVED).partition(":")[2]
    return _SCRIPT_NOOP.match(unquote(code).strip().lower()) is not None


def _storage_page(info: UrlInfo) -> bool:
    """An HTML page on shared object storage (bucket.blob.core.windows.net/x/login.html)."""
    if not info.path.lower().endswith(_PAGE_SUFFIXES):
        return False
    return any(info.host == s or info.host.endswith("." + s) for s in STORAGE_SUFFIXES)


def _host_signals(info: UrlInfo, ctx: LinkContext, seen: str) -> list[Signal]:
    """Signals of a link's host; ``seen`` is the evidence (the first link with this host)."""
    out: list[Signal] = []
    host = info.host
    if info.userinfo:
        tricky = "." in info.userinfo and ":" not in info.userinfo
        out.append(_sig("link-userinfo-host" if tricky else "link-userinfo", host, seen))
    if info.ip is not None:
        out.append(_sig(_ip_rule(info.ip), info.ip.address, seen))
        return out
    for feed in ctx.feeds:
        hit = feed.lookup(host)
        if hit is not None:
            out.append(_sig(f"link-feed-{hit.match}", f"{hit.entry} in {hit.feed}", seen))
            break
    if _broken_host(info):
        return out
    if host in SHORTENERS or hosts.registrable(host) in SHORTENERS:
        out.append(_sig("link-shortener", host, seen))
    out.extend(_name_signals(info, ctx.brands, seen))
    return out


def _name_signals(
    info: UrlInfo, brands: tuple[ProtectedBrand, ...], seen: str
) -> list[Signal]:
    out: list[Signal] = []
    display = info.display_host
    if not display.isascii():
        out.append(_sig("link-idn", info.host, seen))
        if any(mixed_script(label) for label in display.split(".")):
            out.append(_sig("link-idn-mixed-script", info.host, seen))
    match = brand_match(info.host, display, brands)
    if match is not None:
        out.append(_sig(f"link-brand-{match.kind}", f"{match.brand}: {info.host}", seen))
    return out


def shown_host(anchor_text: str) -> str | None:
    """The host an anchor's text shows ("www.bank.example/login" -> "www.bank.example").

    Only text that is wholly a URL or host counts, and only with a public suffix the PSL knows,
    so "invoice.pdf" or "Click here" shows no host.
    """
    m = _SHOWN.match(anchor_text.strip())
    if m is None:
        return None
    host = hosts.to_ascii(m.group(1).lower())
    return host if hosts.known_suffix(host) else None


def _shown_versus_real(
    link: Link, info: UrlInfo, brands: tuple[ProtectedBrand, ...]
) -> list[Signal]:
    text = link.anchor_text
    out: list[Signal] = []
    seen = link_evidence(link)
    if info.scheme == "http" and text.lower().startswith("https://"):
        out.append(_sig("link-https-shown-http", info.host, seen))
    shown = shown_host(text) if text else None
    if shown is None or (info.scheme not in WEB_SCHEMES and info.scheme not in SCRIPT_SCHEMES):
        return out
    if info.host and hosts.registrable(shown) == hosts.registrable(info.host):
        return out
    brand = any(is_official(shown, b) for b in brands)
    name = "link-text-mismatch-brand" if brand else "link-text-mismatch"
    out.append(_sig(name, f"{shown} -> {info.host or info.scheme}", seen))
    return out
