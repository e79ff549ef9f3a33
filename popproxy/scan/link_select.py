"""Which links of a message the link rules judge, when there are more than they can afford.

Judging a host costs ~0.3 ms (feed look-ups, look-alike checks against every protected brand),
so a message's links are bounded; but taking "the first N in document order" lets an attacker
push the real link out with N harmless ones.  Instead:

1. **De-duplicate while collecting** (:class:`LinkPool`): identical links count once, and at most
   ``max_candidates`` distinct links are kept per pool (body and attachments have a pool each, so
   a link-stuffed attachment cannot crowd out the body).
2. **De-duplicate by what the rules can see** (:func:`select_links`): two links with the same
   scheme, host and userinfo and the same features (where found, anchor text, obfuscation, file
   extension) raise the same signals, so one of them stands for all.  A thousand tracking links
   to one host cost one judgement.
3. **Order by what a reader clicks**: anchors, forms, frames and refreshes of the body first,
   then URLs in body text, then links inside attachments; within each, a new host before another
   link of a host already taken, and links with a suspicious shape (anchor text showing another
   host, IP literal, userinfo, punycode, script scheme, obfuscated spelling, form/refresh
   target) first.
4. **The limit counts distinct hosts** (``max_hosts``), plus a cap on links in total; running
   out of either is reported so the scanner can raise ``limit-links``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from popproxy.scan.extract import Link
from popproxy.scan.link_rules import shown_host
from popproxy.scan.urls import WEB_SCHEMES, UrlInfo, parse_url

# Anchor texts up to this length are kept verbatim in a link's features: button labels ("Verify
# now") are short, and the rules match them as a whole.  Longer anchors count by the host they
# show (if any), which is all the rules read from them.  Same value as link_rules' button limit.
_SHORT_ANCHOR = 40
# Sources a reader follows without seeing the URL (a QR code opens on a phone), or that act on
# their own.
_ACTIVE_SOURCES = frozenset({"form", "frame", "refresh", "qr"})

Group = tuple[str, str, str]  # scheme, host, userinfo


@dataclass(slots=True)
class LinkPool:
    """Links collected from one kind of content, de-duplicated, at most ``max_candidates``."""

    max_candidates: int
    links: dict[Link, None] = field(default_factory=dict)  # insertion-ordered set
    overflow: bool = False

    def add(self, found: Iterable[Link]) -> None:
        """Add links (already seen ones are skipped; past the cap, ``overflow`` is set)."""
        for link in found:
            if link in self.links:
                continue
            if len(self.links) >= self.max_candidates:
                self.overflow = True
                return
            self.links[link] = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The links to judge, and whether some were left out (the limit was exhausted)."""

    links: list[Link]
    exhausted: bool
    hosts: int


def select_links(links: Iterable[Link], *, max_hosts: int, max_links: int) -> Selection:
    """Pick at most ``max_hosts`` distinct hosts and ``max_links`` links, most clickable first."""
    tiers: tuple[list[tuple[Group, Link, bool]], ...] = ([], [], [])
    seen: set[tuple[Group, tuple[object, ...]]] = set()
    for link in links:
        info = parse_url(link.url)
        if info is None:
            continue  # no URL the rules could judge either
        group = (info.scheme, info.host, info.userinfo)
        shown = shown_host(link.anchor_text) if link.anchor_text else None
        key = (group, _features(link, info, shown))
        if key in seen:
            continue
        seen.add(key)
        tiers[_tier(link)].append((group, link, _suspicious(link, info, shown)))
    taken: set[Group] = set()
    chosen: list[Link] = []
    exhausted = False
    for tier in tiers:
        firsts: list[tuple[bool, Group, Link]] = []
        repeats: list[tuple[Group, Link]] = []
        first_of: set[Group] = set()
        for group, link, suspicious in tier:
            if group in taken or group in first_of:
                repeats.append((group, link))
            else:
                first_of.add(group)
                firsts.append((not suspicious, group, link))
        firsts.sort(key=lambda item: item[0])  # stable: document order within each class
        for _, group, link in firsts:
            if len(taken) >= max_hosts or len(chosen) >= max_links:
                exhausted = True
                break
            taken.add(group)
            chosen.append(link)
        for group, link in repeats:
            if group not in taken:
                continue  # its host did not fit: counted as left out above
            if len(chosen) >= max_links:
                exhausted = True
                break
            chosen.append(link)
    return Selection(chosen, exhausted, len(taken))


def _tier(link: Link) -> int:
    """0: clickable parts of the body; 1: URLs in body text; 2: links inside attachments."""
    if link.attachment:
        return 2
    return 1 if link.source == "text" else 0


def _features(link: Link, info: UrlInfo, shown: str | None) -> tuple[object, ...]:
    """What the link rules read from a link besides its host: equal features, equal signals."""
    text = link.anchor_text
    anchor: object = (
        text.lower() if len(text) <= _SHORT_ANCHOR else (shown, text[:8].lower() == "https://")
    )
    last = info.path.rsplit("/", 1)[-1]
    extension = last.rsplit(".", 1)[-1].lower() if "." in last else ""
    return (link.source, link.attachment, link.obfuscated, anchor, extension)


def _suspicious(link: Link, info: UrlInfo, shown: str | None) -> bool:
    """A host or link shape that honest mail rarely has: judge these before the rest."""
    return (
        (shown is not None and shown != info.host)  # the anchor shows another host
        or info.ip is not None
        or bool(info.userinfo)
        or info.scheme not in WEB_SCHEMES
        or "xn--" in info.host
        or link.obfuscated
        or link.source in _ACTIVE_SOURCES
    )
