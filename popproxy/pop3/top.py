"""TOP cut from a message read in chunks (RFC 1939 section 7), without holding the message.

"the server sends the headers of the message, the blank line separating the headers from the
body, and then the number of lines of the indicated message's body".  The header block ends at
the first CRLF CRLF; a message without one is all header and is sent whole.
"""

from __future__ import annotations

_BLANK_LINE = b"\r\n\r\n"


class TopCut:
    """Feed the (unstuffed) message in chunks; get back what TOP ``lines`` returns of it."""

    __slots__ = ("_body_lines", "_cr", "_done", "_in_body", "_lines", "_tail")

    def __init__(self, lines: int) -> None:
        self._lines = lines
        self._in_body = False
        self._tail = b""  # the last 3 octets of the header seen, for a CRLF CRLF split by chunks
        self._body_lines = 0
        self._cr = False  # the body chunk before ended in CR: an LF first ends that line
        self._done = False

    @property
    def done(self) -> bool:
        """True once every octet TOP returns has been given back: the rest may be skipped."""
        return self._done

    def feed(self, chunk: bytes) -> bytes:
        if self._done:
            return b""
        if self._in_body:
            return self._body(chunk)
        seen = self._tail + chunk
        end = seen.find(_BLANK_LINE)
        if end == -1:
            self._tail = seen[-3:]
            return chunk
        cut = end + len(_BLANK_LINE) - len(self._tail)  # the blank line's end within ``chunk``
        self._in_body = True
        return chunk[:cut] + self._body(chunk[cut:])

    def _body(self, chunk: bytes) -> bytes:
        if self._body_lines >= self._lines:
            self._done = True
            return b""
        pos = 0
        if self._cr and chunk[:1] == b"\n":
            pos = 1
            self._body_lines += 1
        while self._body_lines < self._lines:
            nl = chunk.find(b"\r\n", pos)
            if nl == -1:
                self._cr = chunk[-1:] == b"\r"
                return chunk  # the line goes on in the next chunk
            pos = nl + 2
            self._body_lines += 1
        self._done = True
        return chunk[:pos]
