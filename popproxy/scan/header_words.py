"""Header values as text: RFC 2047 encoded-words decoded, within a bounded length.

The stdlib decoder (``email.header.decode_header``) is quadratic in the number of words when
charsets alternate, so a value is decoded from its first MAX_HEADER_DECODE_CHARS (a file name
from its last: its extension is at its end).
"""

from __future__ import annotations

import email.errors
from email.header import decode_header, make_header
from email.message import Message

from popproxy.scan.limits import MAX_HEADER_DECODE_CHARS
from popproxy.scan.textdecode import decode_bytes


def _decodable_head(value: str) -> str:
    """At most MAX_HEADER_DECODE_CHARS of ``value``, cut at whitespace so no encoded-word is
    split (a cut word would show as its raw =?...?= text, not be lost)."""
    if len(value) <= MAX_HEADER_DECODE_CHARS:
        return value
    head = value[:MAX_HEADER_DECODE_CHARS]
    cut = max(head.rfind(" "), head.rfind("\t"), head.rfind("\n"))
    return head[:cut] if cut > 0 else head


def decodable_tail(value: str) -> str:
    """Like _decodable_head, but the end of ``value``: a file name's extension is at its end."""
    if len(value) <= MAX_HEADER_DECODE_CHARS:
        return value
    tail = value[-MAX_HEADER_DECODE_CHARS:]
    cut = min((i for i in (tail.find(" "), tail.find("\t"), tail.find("\n")) if i >= 0),
              default=-1)
    return tail[cut + 1 :] if cut >= 0 else tail


def header_text(msg: Message, name: str) -> str:
    """A header decoded from RFC 2047 encoded-words to text; "" when absent."""
    raw = msg.get(name)
    if raw is None:
        return ""
    return decode_words(_decodable_head(str(raw)))


def decode_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded-words decoded.

    Unknown charsets and broken encoded-words fall back to the raw value with bad bytes
    replaced, because a header a person can read matters more than strictness here (and a
    word in a made-up charset must not hide what it says, such as a file name's extension).
    """
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
