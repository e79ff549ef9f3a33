"""A tiny raw-socket POP3 client: sends exact bytes and returns exact response bytes.

Used against the proxy and directly against the upstream, so both answers can be compared
byte for byte (status lines, dot-stuffing and terminators included).
"""

from __future__ import annotations

import socket
import struct
from types import TracebackType

from tests.support.waiting import wait_for as wait_for

DEFAULT_TIMEOUT = 15.0
_MULTILINE_ALWAYS = frozenset({"RETR", "TOP", "CAPA"})
_MULTILINE_WITHOUT_ARGS = frozenset({"LIST", "UIDL", "AUTH"})


def is_multiline(command: bytes) -> bool:
    """Whether a +OK answer to ``command`` has a body (RFC 1939, RFC 2449, RFC 5034)."""
    words = command.strip().split(b" ")
    verb = words[0].decode("ascii", "replace").upper()
    return verb in _MULTILINE_ALWAYS or (verb in _MULTILINE_WITHOUT_ARGS and len(words) == 1)


class RawPOP3:
    """One POP3 connection; ``greeting`` holds the first line read on connect."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
                 read_greeting: bool = True) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self._buf = bytearray()
        self.greeting = self.read_line() if read_greeting else b""

    def __enter__(self) -> RawPOP3:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ I/O
    def _recv(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError(f"connection closed; unread: {bytes(self._buf[:200])!r}")
        self._buf += data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        """One line including its CRLF."""
        start = 0
        while (i := self._buf.find(b"\r\n", start)) < 0:
            start = max(0, len(self._buf) - 1)
            self._recv()
        line = bytes(self._buf[: i + 2])
        del self._buf[: i + 2]
        return line

    def _read_body(self) -> bytes:
        """A dot-stuffed body up to and including the ".CRLF" terminator."""
        start = 0
        while True:
            if self._buf.startswith(b".\r\n"):
                end = 3
                break
            i = self._buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                end = i + 5
                break
            start = max(0, len(self._buf) - 4)
            self._recv()
        body = bytes(self._buf[:end])
        del self._buf[:end]
        return body

    def read_response(self, multiline: bool) -> bytes:
        """The whole raw response: status line, plus the body if ``multiline`` and +OK."""
        status = self.read_line()
        if multiline and status.startswith(b"+OK"):
            return status + self._read_body()
        return status

    def command(self, line: bytes | str, multiline: bool | None = None) -> bytes:
        """Send one command line (CRLF added) and return its raw response."""
        raw = line.encode() if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.read_response(is_multiline(raw) if multiline is None else multiline)

    def login(self, user: str, password: str) -> bytes:
        assert self.command(f"USER {user}").startswith(b"+OK")
        reply = self.command(f"PASS {password}")
        assert reply.startswith(b"+OK"), reply
        return reply

    def send_and_shutdown(self, data: bytes) -> None:
        """Send ``data`` and our FIN in one TCP segment (TCP_CORK), as a batch client that
        writes everything and half-closes; the peer sees the EOF right with the data."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.sock.sendall(data)
        self.sock.shutdown(socket.SHUT_WR)

    def read_until_eof(self, timeout: float = 5.0) -> bytes:
        """Everything the peer still sends until it closes; AssertionError if it stays open."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self._recv()
        except EOFError:
            pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"peer did not close within {timeout}s") from None
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
