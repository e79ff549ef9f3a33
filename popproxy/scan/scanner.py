"""The scan entry point: message bytes -> Verdict, within a size cap and a time budget.

``Scanner.scan`` never raises: a message over the size cap or the time budget gets an
"unscanned" verdict, and so does any exception inside the scanner (cause "error"), so the
proxy's policy, not a traceback, decides whether such mail is delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from email.message import Message

from popproxy.scan import content
from popproxy.scan.attachments import scan_attachment
from popproxy.scan.config import ScanConfig
from popproxy.scan.extract import Extracted, Link, html_extract, text_links
from popproxy.scan.feeds import HostFeed, load_feeds
from popproxy.scan.limits import MAX_ARCHIVE_MEMBERS
from popproxy.scan.link_rules import (
    LinkContext,
    action_link_signals,
    link_signals,
    shortened_hrefs,
)
from popproxy.scan.mime import Part, WalkStats, header_text, parse_message, walk_parts
from popproxy.scan.scoring import combine
from popproxy.scan.textdecode import decode_bytes
from popproxy.scan.verdict import Signal, Verdict
from popproxy.scan.weights import weight

Clock = Callable[[], float]

_BODY_TYPES = ("text/plain", "text/html")
_OWN_HEADER_PREFIX = "x-popproxy-"


class BudgetExceeded(Exception):
    """Raised inside a scan when the time budget has run out."""


class Scanner:
    """Scans messages; one instance can be shared by every session (it keeps no per-scan state)."""

    def __init__(
        self,
        config: ScanConfig | None = None,
        feeds: Sequence[HostFeed] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """Set up a scanner.

        Args:
            config: limits, thresholds and policy lists; the defaults when None.
            feeds: blocklists; None loads ``config.feed_paths``.
            clock: seconds, monotonic; injected so tests can run the budget out.

        Raises:
            OSError: a feed in ``config.feed_paths`` cannot be read (only when ``feeds`` is None).
        """
        self.config = config if config is not None else ScanConfig()
        self.feeds: tuple[HostFeed, ...] = (
            tuple(feeds) if feeds is not None else load_feeds(self.config.feed_paths)
        )
        self._clock = clock
        self._links = LinkContext(self.feeds, self.config.protected_brands, self.config.max_links)

    def scan(self, message: bytes) -> Verdict:
        """Scan one message (raw RFC 5322 bytes, dot-unstuffed); never raises."""
        if len(message) > self.config.max_message_bytes:
            return Verdict.unscanned(
                "too-large", f"{len(message)} bytes over the {self.config.max_message_bytes} cap"
            )
        deadline = self._clock() + self.config.time_budget_seconds
        try:
            return self._scan(message, deadline)
        except BudgetExceeded:
            return Verdict.unscanned(
                "time-budget", f"over the {self.config.time_budget_seconds:g} s budget"
            )
        except Exception as exc:
            return Verdict.unscanned("error", f"internal error {type(exc).__name__}")

    def _checkpoint(self, deadline: float) -> Callable[[], None]:
        def check() -> None:
            if self._clock() > deadline:
                raise BudgetExceeded
        return check

    def _scan(self, message: bytes, deadline: float) -> Verdict:
        check = self._checkpoint(deadline)
        for feed in self.feeds:
            feed.refresh()
        msg = parse_message(message)
        check()
        signals = _header_signals(msg, self.config)
        links: list[Link] = []
        text: list[str] = []
        stats = WalkStats()
        for part in walk_parts(
            msg,
            max_depth=self.config.max_mime_depth,
            max_parts=self.config.max_mime_parts,
            max_decoded_bytes=self.config.max_decoded_bytes,
            stats=stats,
            checkpoint=check,
        ):
            self._part(part, signals, links, text)
        check()
        if stats.limits_hit:
            signals.append(_sig("mime-limits", ",".join(stats.limits_hit)))
        if stats.malformed:
            signals.append(_sig("mime-malformed", ",".join(stats.malformed)))
        subject = header_text(msg, "From") + "\n" + header_text(msg, "Subject")
        visible = " ".join(text)[: self.config.max_text_chars]
        lures = content.lure_signals(subject + "\n" + visible)
        signals.extend(lures)
        if any(s.name == "lure-advance-fee" for s in lures):
            free = content.free_mailbox_sender(
                header_text(msg, "From"), header_text(msg, "Reply-To")
            )
            if free:
                signals.append(_sig("advance-fee-freemail", free))
        signals.extend(content.obfuscation_signals(visible, subject))
        signals.extend(content.greeting_signals(visible, header_text(msg, "To")))
        signals.extend(link_signals(links, self._links))
        signals.extend(
            action_link_signals(
                links, content.sender_domain(header_text(msg, "From")), self.config.max_links
            )
        )
        if any(s.name == "html-image-only" for s in signals):
            shortener = shortened_hrefs(links, self.config.max_links)
            if shortener:
                signals.append(_sig("image-link-shortened", shortener))
        check()
        return combine(signals, self.config.thresholds)

    def _part(self, part: Part, signals: list[Signal], links: list[Link], text: list[str]) -> None:
        if part.content_type in _BODY_TYPES and not part.attachment:
            body = decode_bytes(part.payload, part.charset)[: self.config.max_text_chars]
            if part.content_type == "text/html":
                page = html_extract(body)
                links.extend(page.links)
                text.extend(page.text)
                if page.password_inputs:
                    signals.append(_sig("form-password", ""))
                if page.images and _image_only(page):
                    signals.append(_sig("html-image-only", f"{page.images} images"))
            else:
                links.extend(text_links(body))
                text.append(body)
            return
        found = scan_attachment(
            part,
            check_macros=self.config.check_office_macros,
            max_members=MAX_ARCHIVE_MEMBERS,
        )
        signals.extend(found.signals)
        links.extend(found.links)


# Visible characters below which an HTML body with images "is" its images (SpamAssassin's
# HTML_IMAGE_ONLY rules use similar cut-offs): the words are in a picture no filter reads.
_IMAGE_ONLY_TEXT = 300


def _image_only(page: Extracted) -> bool:
    """Images, a web link, and almost no text: the message is a picture to click."""
    if not any(link.source == "href" and link.url[:4].lower() == "http" for link in page.links):
        return False
    chars = 0
    for chunk in page.text:
        chars += len(chunk.strip())
        if chars >= _IMAGE_ONLY_TEXT:
            return False
    return True


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=detail)


def _header_signals(msg: Message, config: ScanConfig) -> list[Signal]:
    out = content.sender_signals(
        header_text(msg, "From"),
        header_text(msg, "Reply-To"),
        config.protected_brands + config.sender_brands,
    )
    out.extend(content.recipient_signals(header_text(msg, "To"), header_text(msg, "Subject")))
    if any(key.lower().startswith(_OWN_HEADER_PREFIX) for key in msg):
        out.append(_sig("spoofed-verdict-header", ""))
    return out
