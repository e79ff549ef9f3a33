"""A connection to the legacy upstream POP3 server: plain, STLS (RFC 2595) or implicit TLS.

Closing never sends QUIT: RFC 1939 section 6 commits deletions only in the UPDATE state, which
QUIT enters, so the proxy sends QUIT upstream only when the client itself sent it.
No credentials are sent before the TLS handshake (if any) has verified the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from popproxy.policy import Upstream as UpstreamSettings
from popproxy.pop3 import limits
from popproxy.pop3.capa import Capability, parse_capa_body
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import NEED_DATA, BodyData, Command, EndOfBody, ServerEvent, StatusLine
from popproxy.pop3.framing import ResponseFramer, Unstuffer
from popproxy.proxy.channel import Channel, ChannelClosed, open_channel

log = logging.getLogger("popproxy.upstream")


class UpstreamError(Exception):
    """The upstream is unreachable, timed out, closed early, failed TLS or broke the protocol.

    ``reason`` is a short fixed word for metrics (never a host name or address).
    """

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class UpstreamConnection:
    """Framed, timed access to one upstream POP3 connection."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = ("_channel", "_settings", "framer")

    def __init__(self, channel: Channel, settings: UpstreamSettings) -> None:
        self._channel = channel
        self._settings = settings
        self.framer = ResponseFramer()

    @classmethod
    async def open(
        cls, settings: UpstreamSettings, tls: ssl.SSLContext | None
    ) -> UpstreamConnection:
        """Connect, secure (per ``settings.mode``) and read the greeting.

        Raises ``UpstreamError`` on any failure, including certificate verification.
        """
        try:
            async with asyncio.timeout(settings.connect_timeout):
                channel = await open_channel(settings.host, settings.port)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"connect failed: {exc.__class__.__name__}", "connect") from None
        conn = cls(channel, settings)
        try:
            await conn._secure_and_greet(tls)
        except BaseException:
            channel.abort()
            raise
        return conn

    async def _secure_and_greet(self, tls: ssl.SSLContext | None) -> None:
        settings = self._settings
        if settings.mode == "tls":
            await self._start_tls(tls)
        greeting = await self.next_event(timeout=settings.greeting_timeout)
        if not (isinstance(greeting, StatusLine) and greeting.ok):
            raise UpstreamError("upstream did not greet with +OK", "greeting")
        if settings.mode == "starttls":
            status = await self.status(Command("STLS"))
            if not status.ok:
                raise UpstreamError("upstream refused STLS", "stls")
            # RFC 2595 section 4 from the other side: anything the server sent after its +OK
            # arrived in plaintext and must not be taken as a TLS-protected answer.
            if self.framer.buffered() or self._channel.unread:
                raise UpstreamError("upstream sent data after STLS +OK (injection?)", "stls")
            await self._start_tls(tls)

    async def _start_tls(self, tls: ssl.SSLContext | None) -> None:
        if tls is None:
            raise UpstreamError("upstream TLS requested but no TLS context configured")
        name = self._settings.server_name or self._settings.host
        try:
            await self._channel.start_tls(
                tls,
                server_side=False,
                server_hostname=name,
                timeout=self._settings.greeting_timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamError(
                f"certificate verification failed: {exc.verify_message}", "tls_verify"
            ) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise UpstreamError(f"TLS handshake failed: {exc.__class__.__name__}", "tls") from None

    def send(self, cmd: Command) -> None:
        self._channel.write(self.framer.send_command(cmd))

    async def next_event(self, timeout: float | None = None) -> ServerEvent:
        """The next framed event, reading from the socket as needed."""
        limit = self._settings.response_timeout if timeout is None else timeout
        try:
            while True:
                event = self.framer.next_event()
                if event is not NEED_DATA:
                    return event
                self.framer.receive_data(await self._channel.read(timeout=limit))
        except ProtocolError as exc:
            raise UpstreamError(f"protocol error: {exc}", "protocol") from None
        except (OSError, TimeoutError) as exc:
            reason = "timeout" if isinstance(exc, TimeoutError) else "read"
            raise UpstreamError(f"read failed: {exc.__class__.__name__}", reason) from None

    async def status(self, cmd: Command) -> StatusLine:
        """Send a single-line command and return its status line."""
        self.send(cmd)
        return await self._single_line()

    async def pipelined(self, first: Command, second: Command) -> StatusLine:
        """Send two single-line commands in one write (the server lists PIPELINING, RFC 2449
        section 6.6); the first failure, else the second command's status."""
        self._channel.write(self.framer.send_command(first) + self.framer.send_command(second))
        self._channel.flush()
        # Servers that keep Nagle on (Dovecot's login process) hold the second answer until
        # the first is acknowledged; a delayed ACK would stall the login for ~40 ms.
        self._channel.quick_ack()
        status = await self._single_line()
        if status.ok:
            return await self._single_line()
        # The first failed: its answer is the one that counts, whatever the server does with
        # the second line (answers it, closes, or sends garbage; the connection is dropped).
        with contextlib.suppress(UpstreamError):
            await self._single_line()
        return status

    async def _single_line(self) -> StatusLine:
        event = await self.next_event()
        if not isinstance(event, StatusLine) or event.multiline:
            raise UpstreamError("unexpected response framing")
        return event

    async def capabilities(self) -> tuple[Capability, ...]:
        """CAPA before login (RFC 2449 section 5); empty if the server does not know it.

        Raises ``UpstreamError`` if the answer is not a well-formed one within the greeting
        timeout (a server that closes on unknown commands, a +OK without a list, ...): the
        caller then logs in on a fresh connection without pipelining.
        """
        self.send(Command("CAPA"))
        try:
            async with asyncio.timeout(self._settings.greeting_timeout):
                body = await self._capa_body()
        except TimeoutError:
            raise UpstreamError("no complete CAPA answer", "timeout") from None
        try:
            return () if body is None else parse_capa_body(body)
        except ProtocolError:
            return ()  # a garbled list: behave as for a server without CAPA

    async def _capa_body(self) -> bytes | None:
        status = await self.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("unexpected response framing")
        if not status.multiline:
            return None
        unstuffer, body = Unstuffer(), bytearray()
        while not isinstance(event := await self.next_event(), EndOfBody):
            if not isinstance(event, BodyData):
                raise UpstreamError("unexpected response framing")
            body += unstuffer.feed(event.data)
            if len(body) > limits.MAX_CAPA_LINE * limits.MAX_CAPA_LINES:
                raise UpstreamError("CAPA response too large", "protocol")
        return bytes(body)

    def close(self) -> None:
        """Close without QUIT: nothing is committed upstream (RFC 1939 section 6)."""
        self._channel.close()


__all__ = ["ChannelClosed", "UpstreamConnection", "UpstreamError"]
