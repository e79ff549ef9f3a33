"""One session's capture, kept in memory until the session ends (sans-io).

The session feeds what it read from the client (``from_client``) and what it writes to the
client (``from_proxy``); the recorder keeps them as timestamped messages in the order they
happened, with secrets redacted (``redact``) and, unless bodies are kept, every RETR/TOP body
replaced by one line stating its size (house rule: message contents are never logged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from popproxy.capture.redact import ClientRedactor
from popproxy.pop3 import limits

# A capture lives in memory until its session ends, so it is bounded: 8 MiB holds thousands of
# commands or a few omitted-body replies many times over, and a few hundred sessions captured
# at once stay within a few GiB at worst.  Whatever comes later is counted, not kept.
MAX_CAPTURE_BYTES = 8 * 1024 * 1024

# What one message costs besides its content (the Message object, its bytes header and its list
# slot, about 100 bytes on CPython): charged against MAX_CAPTURE_BYTES so a session of tiny
# writes cannot hold millions of objects under the byte cap.
MESSAGE_OVERHEAD = 100

# Replies whose multi-line body is a message (RFC 1939 section 7).
BODY_VERBS = frozenset({"RETR", "TOP"})


@dataclass(frozen=True, slots=True)
class Message:
    """One chunk of the conversation, as mitmproxy's TCPMessage."""

    from_client: bool
    content: bytes
    timestamp: float


class SessionRecorder:
    """``clock`` gives Unix timestamps (``time.time`` in the proxy, a fake one in tests)."""

    def __init__(self, clock: Callable[[], float], keep_bodies: bool = False,
                 limit: int = MAX_CAPTURE_BYTES) -> None:
        self._clock = clock
        self.keep_bodies = keep_bodies
        self.limit = limit
        self.started = clock()
        self.ended: float | None = None
        self.messages: list[Message] = []
        self.used = 0  # bytes charged against ``limit``
        self.dropped = 0  # bytes not kept once the limit was reached
        self.bodies_omitted = 0
        self._redactor = ClientRedactor()
        self._body: BodyOmission | None = None

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def from_client(self, data: bytes, sasl: bool) -> None:
        """Bytes read from the client; ``sasl``: the proxy is inside an AUTH exchange (the
        session's parser mode at this read, see ``redact``)."""
        if data:
            self._add(True, self._redactor.feed(data, sasl))

    def from_proxy(self, data: bytes) -> None:
        """Bytes the proxy writes to the client."""
        if self._body is not None:
            data = self._body.feed(data)
        self._add(False, data)

    @contextmanager
    def reply(self, verb: str) -> Iterator[None]:
        """Around the handling of one TRANSACTION command: everything written meanwhile is its
        reply.  For RETR and TOP the body is omitted unless bodies are kept."""
        if self.keep_bodies or verb not in BODY_VERBS:
            yield
            return
        self._body = BodyOmission()
        try:
            yield
        finally:
            body, self._body = self._body, None
            self._add(False, body.finish())
            self.bodies_omitted += body.omitted

    def finish(self) -> None:
        """The session ended: record a client line cut off by the disconnection."""
        self._add(True, self._redactor.finish())
        if self.ended is None:
            self.ended = self._clock()

    def _add(self, from_client: bool, data: bytes) -> None:
        if not data:
            return
        room = self.limit - self.used - MESSAGE_OVERHEAD
        if room < len(data):
            self.dropped += len(data) - max(room, 0)
            if room <= 0:
                return
            data = data[:room]
        self.used += len(data) + MESSAGE_OVERHEAD
        self.messages.append(Message(from_client, data, self._clock()))


class BodyOmission:
    """The reply to one RETR or TOP: its status line is kept, its body (RFC 1939 section 3:
    dot-stuffed lines up to "CRLF.CRLF") is counted and replaced by one line at the end."""

    def __init__(self) -> None:
        self._status = bytearray()
        self._in_body = False
        self._passing = False  # after a -ERR: a single line, nothing to omit
        self.octets = 0  # body octets as sent, terminator included
        self._tail = b"\r\n"  # the last bytes sent, to find the terminator
        self.omitted = 0

    def feed(self, data: bytes) -> bytes:
        """What of ``data`` may be recorded now."""
        if self._passing:
            return data
        if self._in_body:
            self._count(data)
            return b""
        end = data.find(b"\n")
        if end < 0 and len(self._status) + len(data) <= limits.MAX_STATUS_LINE:
            self._status += data
            return b""
        # A status line longer than RFC 1939 allows cannot come from the session; count it
        # as body rather than show it.
        status = bytes(self._status) + data[: end + 1] if end >= 0 else b""
        rest = data[end + 1 :] if end >= 0 else bytes(self._status) + data
        self._status.clear()
        if status and not status.startswith(b"+OK"):
            self._passing = True
            return status + rest
        self._in_body = True
        self._count(rest)
        return status

    def _count(self, data: bytes) -> None:
        self.octets += len(data)
        self._tail = (self._tail + data)[-5:]

    def finish(self) -> bytes:
        """The line standing for the body, and the terminator if it was sent."""
        if not self._in_body:
            return bytes(self._status)  # no complete status line was written
        terminated = self._tail.endswith(b"\r\n.\r\n") and self.octets >= 3
        size = self.octets - 3 if terminated else self.octets
        self.omitted += 1
        if not terminated:  # the reply was cut short (upstream failure, session end)
            return b"[body of %d octets omitted, reply cut short]\r\n" % size
        return b"[body of %d octets omitted]\r\n.\r\n" % size
