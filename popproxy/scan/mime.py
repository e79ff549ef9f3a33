"""Bounded MIME walk: message bytes -> decoded leaf parts.

The stdlib parser builds the tree (:mod:`.mime_parse`); this module walks it with limits on
depth, part count and decoded bytes, yielding one decoded part at a time so that at most one
decoded payload is alive besides the parse tree.

A multipart without a usable boundary (missing, or never found in the body) is kept by the
parser as one opaque text; the walk reads that text as text/plain *and* walks the parts found
by guessing the boundary from the body (:func:`recover_multipart`), so links hidden there are
judged whichever way a mail client reads such a message.
"""

from __future__ import annotations

import binascii
import quopri
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message

from popproxy.scan.header_words import decodable_tail, decode_words
from popproxy.scan.limits import MAX_OVERFLOW_BYTES, OVERFLOW_PART_COST
from popproxy.scan.mime_parse import parse_message, unparsed_limit
from popproxy.scan.recover import recover_multipart

# Parts the overflow walk can visit at most (each costs at least OVERFLOW_PART_COST): how many
# parts past the limit are split off a multipart without a usable boundary for it.
_OVERFLOW_PARTS = MAX_OVERFLOW_BYTES // OVERFLOW_PART_COST


@dataclass(frozen=True, slots=True)
class Part:
    """One decoded leaf part.

    Attributes:
        content_type: lower-case "maintype/subtype".
        filename: decoded file name ("" when none).
        attachment: True for Content-Disposition: attachment or a named non-text part.
        payload: the body with its transfer encoding removed.
        charset: the declared charset, if any.
        depth: nesting depth (0 for a single-part message).
    """

    content_type: str
    filename: str
    attachment: bool
    payload: bytes
    charset: str | None
    depth: int


@dataclass(slots=True)
class WalkStats:
    """What the walk saw and where it stopped early.

    ``limits_hit`` names the limits reached: "depth", "parts", "decoded-bytes" (the parts past
    them went to the overflow walk) and "overflow" (that walk's byte budget ran out too, so some
    parts were not judged at all).  ``malformed`` names structure no honest client writes that
    the walk worked around ("no-boundary": a multipart without a usable boundary).
    """

    parts: int = 0
    decoded_bytes: int = 0
    overflow_parts: int = 0  # parts judged by the overflow walk, past a limit
    unparsed: bool = False  # a structure too costly to parse was read as text (parse_message)
    limits_hit: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def _as_html(part: Part) -> Part:
    """The body of an unparsed message read as HTML as well: its parts' anchors are markup."""
    return Part(
        content_type="text/html",
        filename="",
        attachment=False,
        payload=part.payload,
        charset=part.charset,
        depth=part.depth,
    )


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except (LookupError, UnicodeError, ValueError, TypeError):
        return ""
    if not name:
        return ""
    return decode_words(decodable_tail(name))


def _is_attachment(part: Message, content_type: str, filename: str) -> bool:
    disposition = str(part.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()
    if disposition == "attachment":
        return True
    return bool(filename) and not content_type.startswith("text/")


def walk_parts(
    msg: Message,
    *,
    max_depth: int,
    max_parts: int,
    max_decoded_bytes: int,
    stats: WalkStats,
    checkpoint: Callable[[], None],
    max_overflow_bytes: int = MAX_OVERFLOW_BYTES,
) -> Iterator[Part]:
    """Yield decoded leaf parts: depth-first within the limits, then the overflow.

    Hitting a limit must not hide the rest of the message: the subtrees past the depth limit,
    and every part after the part-count or decoded-bytes limit, are handed to the overflow walk
    (:func:`_overflow_parts`), which judges them within ``max_overflow_bytes``, body text first.

    Args:
        msg: the parsed message.
        max_depth, max_parts, max_decoded_bytes: past these the walk goes on in the overflow
            walk, recording the limit in ``stats.limits_hit``.
        stats: filled in as the walk goes.
        checkpoint: called before each part; raises to abort (the scanner's time budget).
        max_overflow_bytes: the byte budget of the overflow walk.
    """
    limits = _Limits(max_depth, max_parts, max_decoded_bytes)
    overflow: list[tuple[Message | bytes, int]] = []  # subtrees past a limit, document order
    yield from _bounded_parts(msg, limits, stats, checkpoint, overflow)
    if overflow:
        yield from _overflow_parts(overflow, stats, max_overflow_bytes, checkpoint)


@dataclass(frozen=True, slots=True)
class _Limits:
    """The limits of the depth-first walk (see :func:`walk_parts`)."""

    max_depth: int
    max_parts: int
    max_decoded_bytes: int


def _bounded_parts(
    msg: Message,
    limits: _Limits,
    stats: WalkStats,
    checkpoint: Callable[[], None],
    overflow: list[tuple[Message | bytes, int]],
) -> Iterator[Part]:
    """The depth-first walk within ``limits``; what lies past them is added to ``overflow``."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    late: list[tuple[Message | bytes, int]] = []  # recovered parts past the part limit, raw
    while stack:
        node, depth = stack.pop()
        checkpoint()
        if depth > limits.max_depth:
            _note(stats, "depth")
            overflow.append((node, depth))
            continue
        if stats.parts >= limits.max_parts:
            _note(stats, "parts")
            overflow.append((node, depth))
            overflow.extend(reversed(stack))
            break
        stats.parts += 1
        if node.is_multipart():
            stack.extend(_children(node, depth, stats, limits.max_decoded_bytes))
            continue
        unparsed = _note_unparsed(node, stats)
        broken = node.get_content_maintype() == "multipart"  # and no usable boundary
        cap = limits.max_decoded_bytes
        part = _decode_leaf(node, depth, stats, cap, as_text=broken or unparsed)
        if part is None:
            overflow.append((node, depth))
            overflow.extend(reversed(stack))
            break
        yield part
        if unparsed:
            yield _as_html(part)
        elif broken:
            # The body was scanned as text just now (what a client that gives up on the
            # structure shows); the parts found in it are walked too (what a lenient client
            # shows).  Their bytes count again against max_decoded_bytes as they are decoded.
            _recover(part, depth, stats, limits.max_parts, stack, late)
    overflow.extend(late)


def _children(
    node: Message, depth: int, stats: WalkStats, cap: int
) -> list[tuple[Message, int]]:
    """A multipart's children, last first (for the walk's stack); an encoded message/rfc822
    part's child is the decoded message (see :func:`_encoded_message`)."""
    children = node.get_payload()
    encoded = _encoded_message(node, stats, cap)
    if encoded is not None:
        children = [encoded]
    if not isinstance(children, list):
        return []
    return [(c, depth + 1) for c in reversed(children) if isinstance(c, Message)]


def _note_unparsed(node: Message, stats: WalkStats) -> bool:
    """Whether ``node`` was left unparsed (see :func:`parse_message`); noted as its limit."""
    unparsed = unparsed_limit(node)
    if unparsed is None:
        return False
    _note(stats, unparsed)
    stats.unparsed = True
    return True


def _recover(
    part: Part,
    depth: int,
    stats: WalkStats,
    max_parts: int,
    stack: list[tuple[Message, int]],
    late: list[tuple[Message | bytes, int]],
) -> None:
    """Queue the parts found in a multipart without a usable boundary (:func:`recover_multipart`).

    The parts within the part limit go on the walk's ``stack``; those past it (up to what the
    overflow walk could visit) go to ``late`` raw: they are parsed only if that walk gets to them.
    """
    _note_malformed(stats, "no-boundary")
    room = max(0, max_parts - stats.parts)
    found = recover_multipart(part.payload, room + _OVERFLOW_PARTS)
    if found is None:
        return
    if found.truncated or len(found.parts) > room:
        _note(stats, "parts")
    late.extend((c, depth + 1) for c in found.parts[room:])
    stack.extend((parse_message(c), depth + 1) for c in reversed(found.parts[:room]))


def _overflow_parts(
    roots: list[tuple[Message | bytes, int]],
    stats: WalkStats,
    budget: int,
    checkpoint: Callable[[], None],
) -> Iterator[Part]:
    """The parts under ``roots`` (document order), body text first, within ``budget`` bytes.

    Every node visited costs at least OVERFLOW_PART_COST and every decoded payload its length,
    so a million empty parts cost no more than a few megabytes of real content.  Body text and
    HTML go before attachments: their links are what a reader clicks.  A multipart without a
    usable boundary is read as text here (its raw text still shows any unencoded link).  Parts
    left over when the budget runs out are recorded as the limit "overflow".
    """
    leaves, left = _overflow_leaves(roots, stats, budget, checkpoint)
    leaves.sort(key=lambda leaf: not _is_body(leaf[0]))  # stable: document order otherwise
    for node, depth in leaves:
        if left <= 0:
            _note(stats, "overflow")
            return
        checkpoint()
        unparsed = _note_unparsed(node, stats)
        broken = node.get_content_maintype() == "multipart" or unparsed
        part = _decode_leaf(node, depth, stats, None, as_text=broken, max_bytes=left)
        if part is None:
            continue
        left -= max(OVERFLOW_PART_COST, len(part.payload))
        stats.overflow_parts += 1
        yield part
        if unparsed:
            yield _as_html(part)


def _overflow_leaves(
    roots: list[tuple[Message | bytes, int]],
    stats: WalkStats,
    budget: int,
    checkpoint: Callable[[], None],
) -> tuple[list[tuple[Message, int]], int]:
    """The leaves under ``roots`` the overflow walk can afford, and what is left of ``budget``.

    Containers are paid for as they are visited; leaves when decoded (at least the part cost
    each, which is reserved while they are collected, so collecting stops in time).
    """
    left = budget
    stack = list(reversed(roots))
    leaves: list[tuple[Message, int]] = []
    while stack and left - len(leaves) * OVERFLOW_PART_COST > 0:
        item, depth = stack.pop()
        checkpoint()
        node = parse_message(item) if isinstance(item, bytes) else item
        if node.is_multipart():
            left -= OVERFLOW_PART_COST
            children = node.get_payload()
            if isinstance(children, list):
                stack.extend((c, depth + 1) for c in reversed(children) if isinstance(c, Message))
            continue
        leaves.append((node, depth))
    if stack:
        _note(stats, "overflow")
    return leaves, left


def _is_body(node: Message) -> bool:
    """Inline text or HTML: what a mail client shows as the message (or a broken multipart)."""
    kind = node.get_content_type().lower()
    if node.get_content_maintype() == "multipart":
        return True
    return kind in ("text/plain", "text/html") and not _is_attachment(node, kind, _filename(node))


def _decode_leaf(
    node: Message,
    depth: int,
    stats: WalkStats,
    cap: int | None,
    *,
    as_text: bool = False,
    max_bytes: int | None = None,
) -> Part | None:
    """The decoded part; ``as_text`` reads the body as an inline text/plain part.

    None when the payload would take ``stats.decoded_bytes`` past ``cap`` (the limit
    "decoded-bytes"; None: no cap).  ``max_bytes`` keeps only the payload's first bytes (the
    overflow walk's remaining budget).
    """
    content_type = "text/plain" if as_text else node.get_content_type().lower()
    payload = node.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if max_bytes is not None and len(data) > max_bytes:
        data = data[:max_bytes]
    if cap is not None and stats.decoded_bytes + len(data) > cap:
        _note(stats, "decoded-bytes")
        return None
    stats.decoded_bytes += len(data)
    filename = "" if as_text else _filename(node)
    try:
        charset = node.get_content_charset()
    except (LookupError, UnicodeError, ValueError):
        charset = None
    return Part(
        content_type=content_type,
        filename=filename,
        attachment=not as_text and _is_attachment(node, content_type, filename),
        payload=data,
        charset=charset,
        depth=depth,
    )


def _encoded_message(node: Message, stats: WalkStats, cap: int) -> Message | None:
    """The message inside a message/rfc822 part sent base64 or quoted-printable.

    RFC 2046 section 5.2.1 forbids encoding such a part, but mail clients (and Python's own
    EmailMessage.add_attachment) decode it all the same; the parser reads the encoded text as a
    message of no headers, so the message shown to the reader would go unjudged.  None for any
    other part, or when decoding would take the walk past ``cap`` decoded bytes (the parser's
    reading is walked then, and the limit is the walk's as for any other part).
    """
    if node.get_content_type().lower() != "message/rfc822":
        return None
    encoding = str(node.get("Content-Transfer-Encoding", "")).strip().lower()
    children = node.get_payload()
    if encoding not in ("base64", "quoted-printable") or not isinstance(children, list):
        return None
    if len(children) != 1 or not isinstance(children[0], Message):
        return None
    try:
        # The encoded text as the parser read it: base64 has no ":" (so it all went to the
        # body); quoted-printable keeps the header lines, which the parser took as headers.
        raw = children[0].as_bytes()
        data = binascii.a2b_base64(raw) if encoding == "base64" else quopri.decodestring(raw)
    except (binascii.Error, ValueError, LookupError, TypeError):
        return None  # not decodable: the parser's reading (the encoded text) is walked
    if stats.decoded_bytes + len(data) > cap:
        return None
    stats.decoded_bytes += len(data)
    return parse_message(data)


def _note(stats: WalkStats, limit: str) -> None:
    if limit not in stats.limits_hit:
        stats.limits_hit.append(limit)


def _note_malformed(stats: WalkStats, what: str) -> None:
    if what not in stats.malformed:
        stats.malformed.append(what)
