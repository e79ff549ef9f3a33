"""The scan entry point: message bytes -> Verdict, within a size cap and a time budget.

``Scanner.scan`` never raises: a message over the time budget gets an "unscanned" verdict, and
so does any exception inside the scanner (cause "error"), so the proxy's policy, not a
traceback, decides whether such mail is delivered.

Limits never end the scan early.  Past a limit the scanner goes on with what fits, most
clickable first (body links before attachments; see :mod:`.mime`'s overflow walk and
:mod:`.link_select`), and records the exhausted limit as a ``limit-*`` signal weighted to reach
the tag threshold (see :mod:`.weights`): padding a message past a limit never makes it cleaner.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from email.message import Message

from popproxy.scan import addresses, content, features, hosts
from popproxy.scan.attachments import scan_attachment
from popproxy.scan.collected import Collected, image_only, limit_signals, plain_links
from popproxy.scan.containers import open_container
from popproxy.scan.extract import Extracted, html_extract
from popproxy.scan.feeds import HostFeed, load_feeds
from popproxy.scan.header_facts import HeaderFacts
from popproxy.scan.headers import has_own_headers
from popproxy.scan.limits import (
    MAX_ARCHIVE_MEMBERS,
    MAX_JUDGED_LINKS,
)
from popproxy.scan.link_rules import (
    LinkContext,
    action_link_signals,
    link_signals,
    shortened_hrefs,
)
from popproxy.scan.link_select import Selection, select_links
from popproxy.scan.lures import lure_signals
from popproxy.scan.media import budget_signals, data_uri_images, drawn_codes
from popproxy.scan.mime import Part, WalkStats, walk_parts
from popproxy.scan.mime_parse import parse_message
from popproxy.scan.model import Model, load_for, model_combine
from popproxy.scan.redirectors import unwrap_links
from popproxy.scan.scoring import combine
from popproxy.scan.settings import ScanSettings
from popproxy.scan.textdecode import decode_bytes
from popproxy.scan.verdict import Signal, Verdict
from popproxy.scan.weights import weight

Clock = Callable[[], float]

_BODY_TYPES = ("text/plain", "text/html")


class BudgetExceeded(Exception):
    """Raised inside a scan when the time budget has run out."""


class Scanner:
    """Scans messages; one instance can be shared by every session (it keeps no per-scan state)."""

    def __init__(
        self,
        config: ScanSettings | None = None,
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
        self.config = config if config is not None else ScanSettings()
        self.feeds: tuple[HostFeed, ...] = (
            tuple(feeds) if feeds is not None else load_feeds(self.config.feed_paths)
        )
        self._clock = clock
        # Links are chosen (and bounded) by link_select before the rules see them.
        self._links = LinkContext(self.feeds, self.config.protected_brands, MAX_JUDGED_LINKS)
        # Loaded once (cached per path); None: the weights table combines the signals.
        self.model: Model | None = (
            load_for(self.config.model_path) if self.config.combiner == "model" else None
        )

    def scan(self, message: bytes, *, truncated: bool = False) -> Verdict:
        """Scan one message (raw RFC 5322 bytes, dot-unstuffed); never raises.

        A message over ``max_message_bytes`` is judged on its head (the first
        ``max_message_bytes``, cut at a line end), and so is a head the caller cut itself
        (``truncated=True``: the proxy streams messages over the cap and keeps only their
        first ``max_message_bytes``).  Either way the verdict carries ``limit-size``, weighted
        to tag: growing a message past the cap must not make it look cleaner.
        """
        return self.scan_features(message, truncated=truncated)[0]

    def scan_features(
        self, message: bytes, *, truncated: bool = False
    ) -> tuple[Verdict, dict[str, float]]:
        """:meth:`scan`, and the message's feature vector (:mod:`.features`; empty if unscanned).

        For the benchmark and the training script, which need both from one pass.
        """
        cap = self.config.max_message_bytes
        if len(message) > cap:
            message, truncated = _head(message, cap), True
        deadline = self._clock() + self.config.time_budget_seconds
        try:
            signals, vector = self._evidence(message, deadline, truncated=truncated)
            return self._combine(signals, vector), vector
        except BudgetExceeded:
            return Verdict.unscanned(
                "time-budget", f"over the {self.config.time_budget_seconds:g} s budget"
            ), {}
        except (MemoryError, RecursionError) as exc:
            # The message exhausted a resource as it would the budget: remembered like a
            # timeout (a bug, "error", is judged again at every login; this must not be).
            name = type(exc).__name__
            return Verdict.unscanned("time-budget", f"scan ran out of resources {name}"), {}
        except Exception as exc:
            return Verdict.unscanned("error", f"internal error {type(exc).__name__}"), {}

    def _checkpoint(self, deadline: float) -> Callable[[], None]:
        def check() -> None:
            if self._clock() > deadline:
                raise BudgetExceeded
        return check

    def _scan(self, message: bytes, deadline: float, *, truncated: bool = False) -> Verdict:
        return self._combine(*self._evidence(message, deadline, truncated=truncated))

    def _combine(self, signals: list[Signal], vector: dict[str, float]) -> Verdict:
        if self.model is None:
            return combine(signals, self.config.thresholds)
        return model_combine(signals, vector, self.model, self.config.thresholds)

    def _evidence(
        self, message: bytes, deadline: float, *, truncated: bool = False
    ) -> tuple[list[Signal], dict[str, float]]:
        """The signals and the feature vector of one message (one pass)."""
        check = self._checkpoint(deadline)
        for feed in self.feeds:
            feed.refresh()
        msg = parse_message(message)
        check()
        headers = HeaderFacts.of(msg)
        signals = _header_signals(headers, message, self.config)
        found = Collected(self.config.max_text_chars, self.config.max_link_scan_chars)
        for part in self._walk(msg, self.config.max_mime_depth, found.stats, check):
            self._part(part, signals, found, check)
        check()
        chosen = self._chosen_links(found, headers.sender_domain, signals)
        check()
        links = chosen.links
        signals.extend(limit_signals(found.stats, found, chosen, truncated, len(message)))
        signals.extend(budget_signals(found.media))
        if found.stats.malformed:
            signals.append(_sig("mime-malformed", ",".join(found.stats.malformed)))
        signals.extend(self._wording_signals(found, headers))
        signals.extend(link_signals(links, self._links))
        signals.extend(action_link_signals(links, headers.sender_domain, len(links)))
        if any(s.name == "html-image-only" for s in signals):
            shortener = shortened_hrefs(links, len(links))
            if shortener:
                signals.append(_sig("image-link-shortened", shortener))
        check()
        vector = features.vector(
            signals, found.seen, links, headers.sender_domain, found.text_chars
        )
        return signals, vector

    def _walk(
        self, msg: Message, max_depth: int, stats: WalkStats, check: Callable[[], None]
    ) -> Iterator[Part]:
        """The decoded parts of ``msg`` within the message's MIME limits (see :mod:`.mime`)."""
        return walk_parts(
            msg,
            max_depth=max_depth,
            max_parts=self.config.max_mime_parts,
            max_decoded_bytes=self.config.max_decoded_bytes,
            max_overflow_bytes=self.config.max_overflow_bytes,
            stats=stats,
            checkpoint=check,
        )

    def _chosen_links(
        self, found: Collected, sender_domain: str, signals: list[Signal]
    ) -> Selection:
        """The links to judge: redirects unwrapped, then bounded by link_select."""
        unwrapped = unwrap_links([*found.body_links.links, *found.attachment_links.links])
        if unwrapped.too_deep:
            signals.append(_sig("limit-redirects", unwrapped.too_deep))
        if unwrapped.open_redirect and not _same_owner(unwrapped.open_redirect, sender_domain):
            # Google's own mail (Calendar, Docs) links through Google's redirect.
            signals.append(_sig("link-open-redirect", unwrapped.open_redirect))
        return select_links(
            unwrapped.links,
            max_hosts=self.config.max_links,
            max_links=MAX_JUDGED_LINKS,
        )

    def _wording_signals(self, found: Collected, headers: HeaderFacts) -> list[Signal]:
        """Lures, obfuscated text and greetings in the visible text, From and Subject."""
        headline = headers.from_ + "\n" + headers.subject
        visible = " ".join(found.text)
        out = lure_signals(headline + "\n" + visible)
        if any(s.name == "lure-advance-fee" for s in out):
            free = addresses.free_mailbox_sender(headers)
            if free:
                out.append(_sig("advance-fee-freemail", free))
        out.extend(content.obfuscation_signals(
            visible, headline, self.config.protected_brands + self.config.sender_brands
        ))
        out.extend(content.greeting_signals(visible, headers))
        return out

    def _part(
        self,
        part: Part,
        signals: list[Signal],
        found: Collected,
        check: Callable[[], None],
        level: int = 0,
    ) -> None:
        if part.content_type in _BODY_TYPES and not part.attachment:
            # The whole part is searched for links (within the per-message link-scan budget),
            # not a fixed-size head: padding in front of a link (a 2 MiB comment, whitespace,
            # harmless text) must not push it out of sight.  The HTML parser and the URL
            # pattern are linear, so this costs time in proportion to the message.
            for piece in found.scan_slices(decode_bytes(part.payload, part.charset)):
                check()
                if part.content_type == "text/html":
                    page = html_extract(piece, media=found.media)
                    found.body_links.add(page.links)
                    found.seen.add_page(page)
                    for chunk in page.text:
                        found.add_text(chunk)
                    if page.unparsed:
                        signals.append(_sig("limit-html", "markup read from its source"))
                    if page.password_inputs:
                        signals.append(_sig("form-password", ""))
                    _pictures(page, signals, found, check)
                    if page.images and image_only(page):
                        signals.append(_sig("html-image-only", f"{page.images} images"))
                else:
                    plain_links(piece, found.body_links, check)
                    found.add_text(piece)
            return
        found.seen.add_attachment(part.filename, part.content_type)
        attached = scan_attachment(
            part,
            check_macros=self.config.check_office_macros,
            max_members=MAX_ARCHIVE_MEMBERS,
            media=found.media,
            check=check,
        )
        signals.extend(attached.signals)
        found.attachment_links.add(attached.links)
        for chunk in attached.text:
            found.add_text(chunk)
        self._contents(part, signals, found, check, level)

    def _contents(
        self,
        part: Part,
        signals: list[Signal],
        found: Collected,
        check: Callable[[], None],
        level: int,
    ) -> None:
        """What is inside an attachment (see :mod:`.containers`), judged like the rest."""
        inner = open_container(part, found.containers, level, check)
        signals.extend(inner.signals)
        found.media.skipped += inner.images_skipped  # as images past the QR decoder's limits
        found.attachment_links.add(inner.links)
        for text in inner.texts:
            for piece in found.scan_slices(text):
                plain_links(piece, found.attachment_links, check, attachment=True)
        for member in inner.parts:
            self._part(member, signals, found, check, level + 1)
        if inner.message is not None:
            # An attached message, walked within what is left of the message's MIME limits
            # (the walk's counters are shared, so it cannot buy parts or bytes of its own).
            depth_left = max(self.config.max_mime_depth - part.depth - 1, 0)
            for nested in self._walk(parse_message(inner.message), depth_left, found.stats, check):
                self._part(_at_depth(nested, part.depth + 1), signals, found, check, level + 1)


def _pictures(
    page: Extracted, signals: list[Signal], found: Collected, check: Callable[[], None]
) -> None:
    """QR codes of an HTML body: data: URI pictures, and codes drawn with table cells."""
    if page.data_images:
        pictures = data_uri_images(page.data_images, found.media, check)
        signals.extend(pictures.signals)
        found.body_links.add(pictures.links)
    if page.drawn_codes:
        drawn = drawn_codes(page.drawn_codes, "html table", found.media, check)
        signals.extend(drawn.signals)
        found.body_links.add(drawn.links)


def _same_owner(host: str, sender_domain: str) -> bool:
    """The sender's domain and ``host`` belong to one owner (google.com, google.de: "google")."""
    return bool(sender_domain) and hosts.owner_label(host) == hosts.owner_label(sender_domain)


def _at_depth(part: Part, offset: int) -> Part:
    """A part of an attached message, its depth counted from the outer message."""
    return dataclasses.replace(part, depth=part.depth + offset)


def _head(message: bytes, cap: int) -> bytes:
    """The first ``cap`` bytes, cut after the last line end in them (a whole last line)."""
    end = message.rfind(b"\n", 0, cap) + 1
    return message[: end or cap]


def _sig(name: str, detail: str) -> Signal:
    return Signal(name=name, weight=weight(name), detail=detail)


def _header_signals(headers: HeaderFacts, raw: bytes, config: ScanSettings) -> list[Signal]:
    out = addresses.sender_signals(headers, config.protected_brands + config.sender_brands)
    out.extend(addresses.recipient_signals(headers))
    if has_own_headers(raw):
        out.append(_sig("spoofed-verdict-header", ""))
    return out
