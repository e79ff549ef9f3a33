"""TopCut (RFC 1939 section 7) against the whole-message definition, one byte at a time too."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from popproxy.pop3.top import TopCut


def whole(message: bytes, lines: int) -> bytes:
    """The header, the blank line, then ``lines`` lines of the body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return message
    parts = body.split(b"\r\n")
    if parts and parts[-1] == b"":
        parts.pop()
    kept = parts[:lines]
    cut = b"".join(line + b"\r\n" for line in kept)
    if len(kept) == len(parts) and not body.endswith(b"\r\n") and kept:
        cut = cut[:-2]  # the message's last line had no CRLF of its own
    return head + sep + cut


def cut_in_chunks(message: bytes, lines: int, sizes: list[int]) -> bytes:
    top, out, pos, i = TopCut(lines), bytearray(), 0, 0
    while pos < len(message):
        size = sizes[i % len(sizes)] if sizes else len(message)
        out += top.feed(message[pos:pos + size])
        pos, i = pos + size, i + 1
    return bytes(out)


MESSAGES = st.binary(max_size=60).map(
    lambda b: bytes(b"a\r\n"[x % 3] for x in b))


@given(MESSAGES, st.integers(0, 6))
def test_one_byte_at_a_time(message: bytes, lines: int) -> None:
    assert cut_in_chunks(message, lines, [1]) == whole(message, lines)


@given(MESSAGES, st.integers(0, 6), st.lists(st.integers(1, 9), min_size=1, max_size=5))
def test_any_chunking(message: bytes, lines: int, sizes: list[int]) -> None:
    assert cut_in_chunks(message, lines, sizes) == whole(message, lines)


def test_examples() -> None:
    message = b"Subject: x\r\n\r\none\r\ntwo\r\nthree\r\n"
    assert cut_in_chunks(message, 0, []) == b"Subject: x\r\n\r\n"
    assert cut_in_chunks(message, 2, [1]) == b"Subject: x\r\n\r\none\r\ntwo\r\n"
    assert cut_in_chunks(b"Subject: only a header\r\n", 3, [2]) == b"Subject: only a header\r\n"
    top = TopCut(1)
    assert top.feed(b"A: b\r\n\r\nline\r\nmore") == b"A: b\r\n\r\nline\r\n" and top.done
