"""Bounded MIME walk: message bytes -> decoded leaf parts.

The stdlib parser (compat32 policy: the fastest, and it never raises on malformed input) builds
the tree; this module walks it with limits on depth, part count and decoded bytes, yielding one
decoded part at a time so that at most one decoded payload is alive besides the parse tree.
"""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

from popproxy.scan.textdecode import decode_bytes


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
    """What the walk saw and where it stopped early."""

    parts: int = 0
    decoded_bytes: int = 0
    limits_hit: list[str] = field(default_factory=list)


_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def parse_message(data: bytes) -> Message:
    """Parse message bytes (never raises on malformed MIME; defects are recorded instead)."""
    return _PARSER.parsebytes(data)


def header_text(msg: Message, name: str) -> str:
    """A header decoded from RFC 2047 encoded-words to text; "" when absent.

    Unknown charsets and broken encoded-words fall back to the raw value with bad bytes
    replaced, because a header a person can read matters more than strictness here.
    """
    raw = msg.get(name)
    if raw is None:
        return ""
    value = str(raw)
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError, AssertionError, email.errors.HeaderParseError,
            email.errors.CharsetError):
        try:
            parts = decode_header(value)
        except (ValueError, AssertionError, LookupError, email.errors.HeaderParseError,
                email.errors.CharsetError):
            return value  # broken beyond decoding: the raw text still carries the words
        chunks = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                chunks.append(decode_bytes(chunk, charset))
            else:
                chunks.append(chunk)
        return "".join(chunks)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except (LookupError, UnicodeError, ValueError, TypeError):
        return ""
    if not name:
        return ""
    if "=?" in name:
        try:
            return str(make_header(decode_header(name)))
        except (LookupError, UnicodeError, ValueError, AssertionError):
            return name
    return name


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
) -> Iterator[Part]:
    """Yield decoded leaf parts depth-first, within the limits.

    Args:
        msg: the parsed message.
        max_depth, max_parts, max_decoded_bytes: the walk stops (recording it in
            ``stats.limits_hit``) when one is reached.
        stats: filled in as the walk goes.
        checkpoint: called before each part; raises to abort (the scanner's time budget).
    """
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        node, depth = stack.pop()
        checkpoint()
        if depth > max_depth:
            _note(stats, "depth")
            continue
        stats.parts += 1
        if stats.parts > max_parts:
            _note(stats, "parts")
            return
        if node.is_multipart():
            children = node.get_payload()
            if isinstance(children, list):
                stack.extend((c, depth + 1) for c in reversed(children) if isinstance(c, Message))
            continue
        part = _decode_leaf(node, depth, stats, max_decoded_bytes)
        if part is None:
            return
        yield part


def _decode_leaf(node: Message, depth: int, stats: WalkStats, cap: int) -> Part | None:
    content_type = node.get_content_type().lower()
    payload = node.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    stats.decoded_bytes += len(data)
    if stats.decoded_bytes > cap:
        _note(stats, "decoded-bytes")
        return None
    filename = _filename(node)
    try:
        charset = node.get_content_charset()
    except (LookupError, UnicodeError, ValueError):
        charset = None
    return Part(
        content_type=content_type,
        filename=filename,
        attachment=_is_attachment(node, content_type, filename),
        payload=data,
        charset=charset,
        depth=depth,
    )


def _note(stats: WalkStats, limit: str) -> None:
    if limit not in stats.limits_hit:
        stats.limits_hit.append(limit)
