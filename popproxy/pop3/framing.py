"""Response framing toward the upstream (the proxy's client side) and dot-stuffing both ways.

RFC 1939 section 3: a multi-line response is a status line, then lines "terminated by the
octet pair CRLF", each line starting with "." byte-stuffed by prepending another ".", and ends
with the line ".CRLF".  Only the command that was sent tells whether a body follows, so the
framer is told every command (``send_command``) and keeps a queue of expected responses.

Bodies are passed on still stuffed (``BodyData``), so a relay that does not look inside a
message forwards the upstream's bytes unchanged; ``Unstuffer`` and ``Stuffer`` convert when the
content is needed.  Both work incrementally on arbitrary chunk boundaries.
"""

from __future__ import annotations

from popproxy.pop3 import limits
from popproxy.pop3.errors import RemoteProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BodyData,
    Command,
    ConnectionClosed,
    EndOfBody,
    Need,
    ServerEvent,
    StatusLine,
)
from popproxy.pop3.verbs import VERBS

TERMINATOR = b"\r\n.\r\n"  # CRLF ending the last body line, then ".CRLF" (RFC 1939 section 3)
# Proper prefixes of TERMINATOR that may sit at the end of a chunk and must be held back.
_HOLD_BACK = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


def expects_multiline(cmd: Command) -> bool:
    """True if a +OK answer to ``cmd`` carries a multi-line body (``VerbFacts.multiline_reply``:
    RETR, TOP, CAPA always; LIST, UIDL and bare AUTH without an argument)."""
    facts = VERBS.get(cmd.verb)
    if facts is None:
        return False
    if facts.multiline_reply == "with-no-arg":
        return not cmd.args
    return facts.multiline_reply == "always"


class ResponseFramer:
    """Frames the upstream's byte stream into ``StatusLine``/``BodyData``/``EndOfBody`` events.

    Owns the one receive buffer of the upstream direction.  The greeting is the first expected
    response (RFC 1939 section 4).
    """

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_at_line_start", "_buf", "_chunk", "_end_pending", "_eof", "_expected", "_in_body"
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        # Whether each response still owed has a body, oldest first.  A list, not a deque: an
        # idle session keeps one framer, and a deque costs ~600 bytes.
        self._expected: list[bool] = [False]
        self._in_body = False
        self._end_pending = False  # the terminator was consumed with the last BodyData
        self._at_line_start = True
        self._eof = False
        self._chunk: bytes | None = None  # a whole received body chunk, not yet copied

    def buffered(self) -> int:
        """Received bytes not yet framed (must be 0 before an upstream STLS, RFC 2595 s4)."""
        return len(self._buf) + (len(self._chunk) if self._chunk is not None else 0)

    def send_command(self, cmd: Command) -> bytes:
        """Record that ``cmd`` is sent and return its canonical wire bytes."""
        self._expected.append(expects_multiline(cmd))
        return cmd.render()

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._in_body and not self._buf and self._chunk is None:
            # Hot path of a large RETR: keep the received bytes object as it is (no copy).
            self._chunk = data
        else:
            if self._chunk is not None:
                self._buf += self._chunk
                self._chunk = None
            self._buf += data

    def next_event(self) -> ServerEvent | Need:
        if self._end_pending:
            self._end_pending = False
            return EndOfBody()
        if self._in_body:
            return self._next_body_event()
        if not self._buf:  # (nothing to search: the usual answer before each read)
            return ConnectionClosed() if self._eof else NEED_DATA
        return self._next_status_line()

    def _next_status_line(self) -> ServerEvent | Need:
        limit = limits.MAX_STATUS_LINE
        end = self._buf.find(b"\n", 0, limit)
        if end < 0:
            if len(self._buf) >= limit:
                raise RemoteProtocolError(f"status line longer than {limit} octets (RFC 1939 s3)")
            if self._eof:
                raise RemoteProtocolError("connection closed inside a status line")
            return NEED_DATA
        buf = self._buf
        if end + 1 == len(buf):  # the usual read: one answer, nothing after it (one copy)
            raw = bytes(buf)
            buf.clear()
        else:
            raw = bytes(buf[: end + 1])
            del buf[: end + 1]
        if not self._expected:
            raise RemoteProtocolError("unsolicited response from the upstream")
        # The common "+OK" by a dict look-up on its first four octets; the rest (-ERR, and
        # what is neither) through _status_kind's checks.
        kind = _OK_HEADS.get(raw[:4]) or _status_kind(raw)
        multiline = self._expected.pop(0) and kind == "+OK"
        if multiline:
            self._in_body = True
            self._at_line_start = True
        return StatusLine(kind, raw, multiline=multiline)

    def _next_body_event(self) -> ServerEvent | Need:
        if self._chunk is not None:
            return self._body_from_chunk()
        buf = self._buf
        if self._at_line_start and buf[:3] == b".\r\n":
            del buf[:3]
            return self._end_body()
        if self._at_line_start and len(buf) < 3 and b".\r\n".startswith(buf):
            return self._need_body_data()
        end = _find_terminator(buf)
        if end >= 0:
            data = bytes(memoryview(buf)[: end + 2])
            del buf[: end + len(TERMINATOR)]
            self._in_body = False
            self._end_pending = True
            return BodyData(data)
        keep = _held_back(buf)
        if len(buf) == keep:
            return self._need_body_data()
        cut = len(buf) - keep
        data = bytes(memoryview(buf)[:cut])
        del buf[:cut]
        self._at_line_start = data.endswith(b"\r\n")
        return BodyData(data)

    def whole_body(self) -> bytes | None:
        """Right after a ``multiline`` status line: the whole body if it is all received
        (still dot-stuffed, without its terminator), as one slice instead of ``BodyData`` and
        ``EndOfBody`` events; None if it is not (read it with ``next_event``).  A listing's
        answer mostly arrives with its status line (issue 18: every login's UIDL and LIST)."""
        if not self._in_body or not self._at_line_start or self._end_pending:
            return None
        if self._chunk is not None:  # the body came in a read of its own: one copy
            self._buf += self._chunk
            self._chunk = None
        buf = self._buf
        if buf[:3] == b".\r\n":
            del buf[:3]
            self._in_body = False
            return b""
        end = _find_terminator(buf)
        if end < 0:
            return None
        data = bytes(memoryview(buf)[: end + 2])
        del buf[: end + len(TERMINATOR)]
        self._in_body = False
        return data

    def _body_from_chunk(self) -> ServerEvent | Need:
        """``_next_body_event`` on an uncopied chunk (``_buf`` is empty)."""
        chunk, self._chunk = self._chunk, None
        assert chunk is not None
        if self._at_line_start and chunk[:1] == b".":
            self._buf += chunk  # rare: a dot right at a chunk start; take the general path
            return self._next_body_event()
        end = _find_terminator(chunk)
        if end >= 0:
            self._buf += chunk[end + len(TERMINATOR) :]
            self._in_body = False
            self._end_pending = True
            return BodyData(chunk[: end + 2])
        keep = _held_back(chunk)
        if keep:
            self._buf += chunk[-keep:]
            chunk = chunk[:-keep]
            if not chunk:
                return self._need_body_data()
        self._at_line_start = chunk.endswith(b"\r\n")
        return BodyData(chunk)

    def _need_body_data(self) -> Need:
        if self._eof:
            raise RemoteProtocolError("connection closed inside a multi-line response")
        return NEED_DATA

    def _end_body(self) -> EndOfBody:
        self._in_body = False
        return EndOfBody()


# (indicator as bytes, its length, the kind StatusLine carries): built once, not per line.
_STATUS_KINDS = tuple((kind.encode(), len(kind), kind) for kind in ("+OK", "-ERR"))
# "+OK" followed by what may end the indicator (RFC 1939 section 3): ``_status_kind``'s
# answer for every line starting with one of these.
_OK_HEADS = {b"+OK" + end: "+OK" for end in (b" ", b"\r", b"\n")}


def _status_kind(raw: bytes) -> str:
    for prefix, size, kind in _STATUS_KINDS:
        if raw.startswith(prefix) and raw[size : size + 1] in (b" ", b"\r", b"\n"):
            return kind
    if raw[:2] in (b"+ ", b"+\r", b"+\n"):
        # The proxy logs in upstream with USER/PASS only (proxy/auth.py), never AUTH, so a
        # SASL continuation (RFC 5034 section 4) is never owed to it.
        raise RemoteProtocolError("continuation line outside an AUTH exchange")
    raise RemoteProtocolError("status line is neither +OK nor -ERR (RFC 1939 section 3)")


def _find_terminator(buf: bytes | bytearray) -> int:
    """Index of TERMINATOR in ``buf`` or -1.  It contains a ".", so searching for the first
    "." (one fast byte scan) first lets us skip dot-free stretches of a body."""
    dot = buf.find(b".")
    return -1 if dot < 0 else buf.find(TERMINATOR, max(0, dot - 2))


def _held_back(buf: bytes | bytearray) -> int:
    """Length of the longest suffix of ``buf`` that could begin the body terminator."""
    tail = buf[-4:]
    for prefix in _HOLD_BACK:
        if tail.endswith(prefix):
            return len(prefix)
    return 0


class _LineStartRewriter:
    """Rewrites what follows each line start, carrying line-end state across chunks."""

    def __init__(self) -> None:
        self._carry = b"\r\n"  # the status line's CRLF: the body starts at a line start

    def _apply(self, data: bytes, old: bytes, new: bytes) -> bytes:
        if not data:
            return b""
        window = self._carry + data
        out = window.replace(old, new)[len(self._carry) :]
        if window.endswith(b"\r\n"):
            self._carry = b"\r\n"
        else:
            self._carry = b"\r" if window.endswith(b"\r") else b""
        return out


class Unstuffer(_LineStartRewriter):
    """Removes dot-stuffing from body chunks (RFC 1939 section 3), across any chunk boundary."""

    def feed(self, data: bytes) -> bytes:
        return self._apply(data, b"\r\n.", b"\r\n")


class Stuffer(_LineStartRewriter):
    """Adds dot-stuffing to body content and terminates the body (RFC 1939 section 3).

    A "." at the very start and after every CRLF is doubled, wherever the chunk boundaries
    fall; ``finish`` adds a missing final CRLF and the ".CRLF" terminator.
    """

    def feed(self, data: bytes) -> bytes:
        return self._apply(data, b"\r\n.", b"\r\n..")

    def finish(self) -> bytes:
        return (b"" if self._carry == b"\r\n" else b"\r\n") + b".\r\n"


def stuff_body(content: bytes) -> bytes:
    """Whole-message helper: the stuffed, terminated wire form of ``content``."""
    stuffer = Stuffer()
    return stuffer.feed(content) + stuffer.finish()
