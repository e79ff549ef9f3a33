"""A connection to the legacy upstream POP3 server.

Closing never sends QUIT: RFC 1939 section 6 commits deletions only in the UPDATE state, which
QUIT enters, so the proxy sends QUIT upstream only when the client itself sent it.
"""

from __future__ import annotations

import asyncio
import logging

from popproxy.policy.config import Upstream as UpstreamSettings
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import NEED_DATA, Command, ServerEvent, StatusLine
from popproxy.pop3.framing import ResponseFramer

log = logging.getLogger("popproxy.upstream")

# Large reads keep per-chunk Python overhead low on multi-MiB RETR bodies.
READ_CHUNK = 256 * 1024


class UpstreamError(Exception):
    """The upstream is unreachable, timed out, closed early or broke the protocol."""


class UpstreamConnection:
    """Framed, timed access to one upstream POP3 connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: UpstreamSettings,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._settings = settings
        self.framer = ResponseFramer()

    @classmethod
    async def open(cls, settings: UpstreamSettings) -> UpstreamConnection:
        """Connect and read the greeting; raises ``UpstreamError`` on any failure."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(settings.host, settings.port, limit=READ_CHUNK),
                settings.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"connect failed: {exc.__class__.__name__}") from None
        conn = cls(reader, writer, settings)
        try:
            greeting = await conn.next_event(timeout=settings.greeting_timeout)
        except UpstreamError:
            conn.close()
            raise
        if not (isinstance(greeting, StatusLine) and greeting.ok):
            conn.close()
            raise UpstreamError("upstream did not greet with +OK")
        return conn

    def send(self, cmd: Command) -> None:
        self._writer.write(self.framer.send_command(cmd))

    def send_raw_sasl(self, line: bytes) -> None:
        self._writer.write(self.framer.send_sasl_response(line))

    async def next_event(self, timeout: float | None = None) -> ServerEvent:
        """The next framed event, reading from the socket as needed."""
        limit = self._settings.response_timeout if timeout is None else timeout
        try:
            while True:
                event = self.framer.next_event()
                if event is not NEED_DATA:
                    return event
                async with asyncio.timeout(limit):
                    data = await self._reader.read(READ_CHUNK)
                self.framer.receive_data(data)
        except ProtocolError as exc:
            raise UpstreamError(f"protocol error: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"read failed: {exc.__class__.__name__}") from None

    async def status(self, cmd: Command) -> StatusLine:
        """Send a single-line command and return its status line."""
        self.send(cmd)
        event = await self.next_event()
        if not isinstance(event, StatusLine) or event.multiline:
            raise UpstreamError("unexpected response framing")
        return event

    def close(self) -> None:
        """Close without QUIT: nothing is committed upstream (RFC 1939 section 6)."""
        if not self._writer.is_closing():
            self._writer.close()
