"""What the scanner collects from a message's parts, and the limit signals it derives.

The parts of one message feed one :class:`Collected`: the links found (body and attachments
apart, in bounded pools), the visible text for the wording rules, the budgets spent (link scan,
images and PDFs, containers) and the walk's statistics.  :func:`limit_signals` turns every
exhausted budget into evidence (``limit-*``): hitting a limit never makes a message cleaner.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.scan import features
from popproxy.scan.extract import Extracted, text_links
from popproxy.scan.limits import MAX_LINK_CANDIDATES, TEXT_LINK_CHUNK
from popproxy.scan.link_select import LinkPool, Selection
from popproxy.scan.mime import WalkStats
from popproxy.scan.qr import MediaBudget
from popproxy.scan.verdict import Signal
from popproxy.scan.weights import weight
from popproxy.scan.zips import ContainerBudget


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=detail)


@dataclass(slots=True)
class Collected:
    """What the parts of one message yield for the message-wide rules, within the budgets.

    ``text`` is the visible text for the wording rules, at most ``text_cap`` characters
    (``text_cut`` when more was dropped).  ``scan_left`` is what remains of the link-scan
    budget (``scan_cut`` when a part had to be read as head and tail only).
    """

    text_cap: int
    scan_left: int
    body_links: LinkPool = field(default_factory=lambda: LinkPool(MAX_LINK_CANDIDATES))
    attachment_links: LinkPool = field(default_factory=lambda: LinkPool(MAX_LINK_CANDIDATES))
    media: MediaBudget = field(default_factory=MediaBudget)  # images (QR) and PDFs decoded
    text: list[str] = field(default_factory=list)
    seen: features.Observed = field(default_factory=features.Observed)  # shape, for the model
    text_chars: int = 0
    text_cut: bool = False
    scan_cut: bool = False
    stats: WalkStats = field(default_factory=WalkStats)
    containers: ContainerBudget = field(default_factory=ContainerBudget)

    def add_text(self, chunk: str) -> None:
        """Keep visible text for the wording rules, up to ``text_cap`` characters."""
        room = self.text_cap - self.text_chars
        if len(chunk) > room:
            self.text_cut = True
            chunk = chunk[: max(room, 0)]
        if chunk:
            self.text.append(chunk)
            self.text_chars += len(chunk)

    def scan_slices(self, text: str) -> list[str]:
        """The part as it is, or, past the budget, its head and its tail (read separately).

        Head *and* tail, because padding is put in front of a link or behind it; a link in the
        middle of a part bigger than what is left of the budget goes unread, but the message
        then carries ``limit-text`` (weighted to tag), so the padding gains nothing.
        """
        if len(text) <= self.scan_left:
            self.scan_left -= len(text)
            return [text]
        self.scan_cut = True
        room, self.scan_left = max(self.scan_left, 0), 0
        head = room // 2
        return [piece for piece in (text[:head], text[len(text) - (room - head) :]) if piece]


_CHUNK_END = re.compile(r"[\s<>\"'`]")  # characters no URL in running text contains


def plain_links(
    text: str, pool: LinkPool, check: Callable[[], None], *, attachment: bool = False
) -> None:
    """URLs of running text, chunk by chunk, until the pool is full."""
    start = 0
    while start < len(text) and not pool.overflow:
        end = start + TEXT_LINK_CHUNK
        if end < len(text):
            cut = _CHUNK_END.search(text, end)
            end = cut.start() if cut is not None else len(text)
        pool.add(text_links(text[start:end], attachment=attachment))
        start = end
        check()


# The limit names of the MIME walk, as signals.  "overflow" (the overflow walk ran out too)
# is reported in the detail of the limit that started it.
_WALK_LIMITS = {"depth": "limit-depth", "parts": "limit-parts", "decoded-bytes": "limit-decoded"}


def limit_signals(
    stats: WalkStats, found: Collected, chosen: Selection, truncated: bool, size: int
) -> list[Signal]:
    """One signal per exhausted limit: hitting a limit is evidence, not a reason to stop."""
    out: list[Signal] = []
    rest = ", some unjudged" if "overflow" in stats.limits_hit else ""
    detail = f"{stats.overflow_parts} parts judged past it{rest}"
    if stats.unparsed:
        # The body was read as raw text: links inside base64 or quoted-printable parts were not
        # decoded, so the message is made inert (scoring forces at least defang; the defang
        # render decodes every part it rewrites).
        out.append(_sig("limit-structure", ",".join(stats.limits_hit)))
    for limit in stats.limits_hit:
        if limit in _WALK_LIMITS and not stats.unparsed:
            out.append(_sig(_WALK_LIMITS[limit], detail))
    if chosen.exhausted or found.body_links.overflow or found.attachment_links.overflow:
        out.append(_sig("limit-links", f"{chosen.hosts} hosts judged"))
    if found.scan_cut or found.text_cut:
        what = "head and tail of a part read" if found.scan_cut else "wording read in part"
        out.append(_sig("limit-text", what))
    if truncated:
        out.append(_sig("limit-size", f"first {size} bytes judged"))
    return out


# Visible characters below which an HTML body with images "is" its images (SpamAssassin's
# HTML_IMAGE_ONLY rules use similar cut-offs): the words are in a picture no filter reads.
_IMAGE_ONLY_TEXT = 300


def image_only(page: Extracted) -> bool:
    """Images, a web link, and almost no text: the message is a picture to click."""
    if not any(link.source == "href" and link.url[:4].lower() == "http" for link in page.links):
        return False
    chars = 0
    for chunk in page.text:
        chars += len(chunk.strip())
        if chars >= _IMAGE_ONLY_TEXT:
            return False
    return True
