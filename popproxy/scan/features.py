"""The feature vector the trained combiner (:mod:`.model`) reads: signals plus message shape.

Everything here is computed from what the scanner already collected in its one pass over the
message (the judged links, the HTML pages' counts, the attachments' names and types, the visible
text's length, the signals): nothing is parsed twice, and each function is linear in what it is
given, which the scanner has already bounded (MAX_JUDGED_LINKS, max_text_chars, ...).

What is deliberately *not* a feature, because it tells the evaluation corpora apart rather than
phishing from honest mail (see ../shared/corpus/README.md): dates, mailer names or versions,
Received chains, X-headers, the language of the text, the To header (the honeypot rewrites it),
and any host or domain name itself (a model must not memorise the corpus's hosts).  "Has an HTML
body" is left out too: the 2002 ham is mostly plain text and modern mail (honest or not) is HTML,
so it would measure the era.  Tests check
those names are absent (tests/scan/test_model.py).  A feature's name says what it measures;
signals appear as ``sig:<signal name>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from popproxy.scan import hosts
from popproxy.scan.attachments import extensions
from popproxy.scan.extract import Extracted, Link
from popproxy.scan.lists import FREEMAIL_DOMAINS
from popproxy.scan.urls import parse_url
from popproxy.scan.verdict import Signal

# Bumped whenever a feature changes meaning: a model trained on another version is refused
# (popproxy.scan.model falls back to the weights table).
FEATURES_VERSION = 1

SIGNAL_PREFIX = "sig:"

# TLDs that public abuse statistics rank highest year after year (Spamhaus "The World's Most
# Abused TLDs", Interisle "Phishing Landscape" 2022-2024): cheap or free registration, slow
# takedown.  A class, not the hosts: the model learns "registered under a cheap-abuse TLD", never
# a particular domain.  Country TLDs of large languages (.ru, .cn, .br ...) are left out on
# purpose: they would stand in for the language.
ABUSED_TLDS: frozenset[str] = frozenset({
    "top", "xyz", "tk", "ml", "ga", "cf", "gq", "buzz", "icu", "cyou", "bond", "sbs", "cfd",
    "rest", "click", "link", "online", "site", "live", "shop", "club", "work", "fit", "support",
    "store", "monster", "quest", "uno", "lol", "pw", "cam", "casa", "surf", "digital", "today",
})

# Redirect and link-protection wrappers of big platforms (issue 15 item 1 unwraps them); their
# presence is a shape feature, never evidence on its own.
_REDIRECTORS: tuple[tuple[str, str], ...] = (
    ("google.", "/url"), ("bing.com", "/ck/a"), ("safelinks.protection.outlook.com", "/"),
    ("urldefense.com", "/"), ("urldefense.proofpoint.com", "/"), ("l.facebook.com", "/l.php"),
    ("t.co", "/"), ("lnkd.in", "/"), ("href.li", "/"),
)

# Words phishing kits put in their URL paths and host labels to look official; language-neutral
# technical words (and the WordPress paths of the hacked sites kits are uploaded to).
_URL_LURE_TOKENS: tuple[str, ...] = (
    "login", "logon", "signin", "sign-in", "verify", "verif", "secure", "account", "update",
    "confirm", "auth", "webscr", "wallet", "billing", "recover", "unlock", "validat", "suspend",
    "wp-content", "wp-admin", "wp-includes", ".php", "index.htm", "redirect", "session",
)

# Attachment classes by extension (the last one); content sniffing is the attachment rules' job.
_ATTACH_CLASSES: dict[str, frozenset[str]] = {
    "pdf": frozenset({"pdf"}),
    "office": frozenset({"doc", "docx", "docm", "xls", "xlsx", "xlsm", "ppt", "pptx", "rtf",
                         "odt", "ods"}),
    "archive": frozenset({"zip", "rar", "7z", "gz", "tar", "iso", "img", "cab", "arj", "lz"}),
    "html": frozenset({"htm", "html", "shtml", "xhtml", "mht", "mhtml", "svg", "hta"}),
    "image": frozenset({"png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"}),
    "script": frozenset({"exe", "js", "vbs", "scr", "bat", "cmd", "ps1", "jar", "lnk", "msi",
                         "wsf", "hta"}),
}

# Caps that keep one outlandish message from dominating a linear model.
_MAX_COUNT = 50.0
_MAX_RATIO = 10.0


@dataclass(slots=True)
class Observed:
    """What the scanner saw in its walk that the signals do not say: filled as it goes."""

    html_parts: int = 0
    images: int = 0
    forms: int = 0
    scripts: int = 0
    attachments: list[str] = field(default_factory=list)  # attachment classes

    def add_page(self, page: Extracted) -> None:
        """Count one HTML body part's elements."""
        self.html_parts += 1
        self.images += page.images
        self.forms += page.forms
        self.scripts += page.scripts

    def add_attachment(self, filename: str, content_type: str) -> None:
        """Record an attachment's class (by its last extension, else its declared type)."""
        self.attachments.append(attachment_class(filename, content_type))


def attachment_class(filename: str, content_type: str) -> str:
    """"pdf", "office", "archive", "html", "image", "script" or "other"."""
    exts = extensions(filename)
    last = exts[-1] if exts else content_type.rpartition("/")[2]
    for name, members in _ATTACH_CLASSES.items():
        if last in members:
            return name
    if content_type.startswith("image/"):
        return "image"
    return "pdf" if content_type == "application/pdf" else "other"


def vector(
    signals: Iterable[Signal],
    seen: Observed,
    links: Sequence[Link],
    sender_domain: str,
    visible_chars: int,
) -> dict[str, float]:
    """The feature vector of one message (features that are 0 are left out)."""
    out: dict[str, float] = {SIGNAL_PREFIX + s.name: 1.0 for s in signals}
    out.update(_link_features(links, sender_domain))
    out.update(_sender_features(sender_domain))
    out.update(_page_features(seen, visible_chars, len(links)))
    for kind in set(seen.attachments):
        out["attach." + kind] = 1.0
    if seen.attachments:
        out["attach.count"] = math.log1p(min(len(seen.attachments), _MAX_COUNT))
    return {name: value for name, value in out.items() if value}


def _page_features(seen: Observed, visible_chars: int, links: int) -> dict[str, float]:
    text_units = 1.0 + visible_chars / 200.0  # ~ one short paragraph
    return {
        "html.images": math.log1p(min(seen.images, _MAX_COUNT)),
        "html.image_text_ratio": min(seen.images / text_units, _MAX_RATIO),
        "html.forms": float(min(seen.forms, 3)),
        "html.scripts": float(min(seen.scripts, 3)),
        "text.chars": math.log1p(visible_chars) / 10.0,
        "text.link_density": min(links / text_units, _MAX_RATIO),
    }


def _link_features(links: Sequence[Link], sender_domain: str) -> dict[str, float]:
    """URL shape over the judged links: counts, host shape, path and query shape."""
    web = [(link, info) for link in links if (info := parse_url(link.url)) and info.host]
    if not web:
        return {}
    host_names = {info.host for _, info in web}
    names = [h for h in host_names if hosts.parse_ip_host(h) is None]
    domains = {hosts.registrable(h) for h in names}
    sender = hosts.registrable(sender_domain.lower()) if sender_domain else ""
    urls = [link.url for link, _ in web]
    lowered = [u.lower() for u in urls]
    return {
        "links.count": math.log1p(min(len(web), _MAX_COUNT)),
        "links.hosts": math.log1p(min(len(host_names), _MAX_COUNT)),
        "links.domains": math.log1p(min(len(domains), _MAX_COUNT)),
        "links.http_share": sum(info.scheme == "http" for _, info in web) / len(web),
        "links.attachment_share": sum(link.attachment for link, _ in web) / len(web),
        "links.sender_aligned": _share(d == sender for d in domains) if sender else 0.0,
        "host.max_len": max((len(h) for h in names), default=0) / 20.0,
        "host.max_labels": float(min(max((h.count(".") + 1 for h in names), default=0), 8)),
        "host.digits_share": _share(sum(c.isdigit() for c in h) >= 2 for h in names),
        "host.max_hyphens": float(min(max((d.count("-") for d in domains), default=0), 5)),
        "host.abused_tld_share": _share(d.rpartition(".")[2] in ABUSED_TLDS for d in domains),
        "url.max_len": math.log1p(max(len(u) for u in urls)) / 5.0,
        "url.max_path_depth": float(min(max(info.path.count("/") for _, info in web), 10)),
        "url.lure_tokens": float(sum(any(t in u for u in lowered) for t in _URL_LURE_TOKENS)),
        "url.max_query_keys": float(min(max(_query_keys(u) for u in urls), 10)),
        "url.query_address": float(any("@" in u.partition("?")[2] for u in urls)),
        "url.redirector_share": sum(_redirector(info.host, info.path) for _, info in web)
        / len(web),
    }


def _sender_features(domain: str) -> dict[str, float]:
    """The shape of the From domain (never the domain itself)."""
    if not domain:  # "Name" <>, a bare name, <@host>: no mail system writes that
        return {"sender.no_domain": 1.0}
    domain = domain.lower().rstrip(".")
    owner = hosts.registrable(domain)
    label = owner.partition(".")[0]
    return {
        "sender.freemail": float(hosts.owner_domain(domain) in FREEMAIL_DOMAINS),
        "sender.abused_tld": float(owner.rpartition(".")[2] in ABUSED_TLDS),
        "sender.digits": float(sum(c.isdigit() for c in label) >= 2),
        "sender.hyphens": float(min(label.count("-"), 3)),
        "sender.subdomain_labels": float(min(domain.count(".") - owner.count("."), 5)),
    }


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def _query_keys(url: str) -> int:
    """Query parameters, not counting the utm_* analytics keys every marketing mail carries."""
    query = url.partition("?")[2].partition("#")[0]
    if not query:
        return 0
    return sum(1 for pair in query.split("&") if not pair.lower().startswith("utm_"))


def _redirector(host: str, path: str) -> bool:
    return any(
        (host.startswith(h) or host == h or host.endswith("." + h)) and path.startswith(p)
        for h, p in _REDIRECTORS
    )
