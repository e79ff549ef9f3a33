"""A connection to the legacy upstream POP3 server: plain, STLS (RFC 2595) or implicit TLS.

The connection's bytes are a ``socket_channel.SocketChannel`` from ``upstream_socket``.
Closing never sends QUIT: RFC 1939 section 6 commits deletions only in the UPDATE state, which
QUIT enters, so the proxy sends QUIT upstream only when the client itself sent it.
No credentials are sent before the TLS handshake (if any) has verified the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Protocol

from popproxy.policy import Upstream as UpstreamSettings
from popproxy.pop3 import limits
from popproxy.pop3.capa import Capability, parse_capa_body
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BodyData,
    Command,
    ConnectionClosed,
    EndOfBody,
    ServerEvent,
    StatusLine,
)
from popproxy.pop3.framing import ResponseFramer, Unstuffer
from popproxy.pop3.listing import ListingReader, parse_listing
from popproxy.proxy.channel_errors import ChannelClosed, why_failed
from popproxy.proxy.resting import rest_soon
from popproxy.proxy.upstream_socket import open_channel

log = logging.getLogger("popproxy.upstream")

# A CAPA answer longer than the lines pop3.capa accepts is refused before it is parsed.
MAX_CAPA_BODY = limits.MAX_CAPA_LINE * limits.MAX_CAPA_LINES


class UpstreamFailure(enum.StrEnum):
    """Why an upstream failed: the ``reason`` label of ``popproxy_upstream_errors_total`` and
    of the audit log.  One name per cause, so the same failure is counted the same way from
    every code path (issue 16: "closed" here and "error" there split one alert in two)."""

    CONNECT = "connect"  # TCP connect refused or timed out
    GREETING = "greeting"  # no +OK greeting (RFC 1939 section 4)
    TIMEOUT = "timeout"  # no answer within the configured timeout
    TLS = "tls"  # TLS handshake failed, or TLS configured without a context
    TLS_VERIFY = "tls_verify"  # the server's certificate did not verify
    PROTOCOL = "protocol"  # an answer that breaks RFC 1939 framing, or a refused listing
    READ = "read"  # the socket failed (reset, ...)
    CLOSED = "closed"  # the server closed the connection before its answer was complete
    STLS = "stls"  # STLS refused, or plaintext after its +OK (RFC 2595 section 4)


class UpstreamError(Exception):
    """The upstream is unreachable, timed out, closed early, failed TLS or broke the protocol.

    ``reason`` is a fixed word for metrics (never a host name or address).
    """

    def __init__(self, message: str, reason: UpstreamFailure) -> None:
        super().__init__(message)
        self.reason = reason


def closed_early() -> UpstreamError:
    """The one error for an upstream that closed before its answer was complete."""
    return UpstreamError("upstream closed the connection mid-response", UpstreamFailure.CLOSED)


class UpstreamChannel(Protocol):
    """What an upstream connection needs of its byte stream (``socket_channel.SocketChannel``
    from ``upstream_socket.open_channel``; tests pass an in-memory one)."""

    @property
    def unread(self) -> int: ...
    def read(self, timeout: float | None = None) -> Awaitable[bytes]: ...
    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def quick_ack(self) -> None: ...
    def rest(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    async def start_tls(self, ctx: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None, timeout: float = 10.0) -> None: ...


Connector = Callable[[str, int], Awaitable[UpstreamChannel]]


class UpstreamConnection:
    """Framed, timed access to one upstream POP3 connection: the one reader of its answers.

    One request/response API: ``request`` (send, read the status line), then for a multi-line
    answer either ``body()`` (the still-stuffed chunks, for relaying) or ``read_unstuffed``
    (the whole body, bounded, for answers the proxy reads itself).  Every failure is an
    ``UpstreamError`` with an ``UpstreamFailure`` reason.
    """

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = ("_channel", "_eof", "_settings", "framer", "pipelining")

    def __init__(self, channel: UpstreamChannel, settings: UpstreamSettings) -> None:
        self._channel = channel
        self._settings = settings
        self._eof = False  # the server closed its side
        self.framer = ResponseFramer()
        # The server lists PIPELINING (RFC 2449 s6.6), learned at login: several commands may
        # go in one write (auth.py sets it; False means one command per round trip).
        self.pipelining = False

    @classmethod
    async def open(
        cls, settings: UpstreamSettings, tls: ssl.SSLContext | None,
        connect: Connector = open_channel,
    ) -> UpstreamConnection:
        """Connect, secure (per ``settings.mode``) and read the greeting.

        ``connect``: how to reach ``(host, port)`` (tests pass an in-memory one).
        Raises ``UpstreamError`` on any failure, including certificate verification.
        """
        try:
            if connect is open_channel:  # it keeps the deadline itself (no asyncio.timeout)
                channel: UpstreamChannel = await open_channel(
                    settings.host, settings.port, settings.connect_timeout)
            else:
                async with asyncio.timeout(settings.connect_timeout):
                    channel = await connect(settings.host, settings.port)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"connect failed ({settings.host}:{settings.port}): "
                                f"{why_failed(exc, settings.connect_timeout)}",
                                UpstreamFailure.CONNECT) from None
        conn = cls(channel, settings)
        try:
            # Here, not in a helper coroutine: each frame is resumed at every await of a login.
            if settings.mode == "tls":
                await conn._start_tls(tls)
            greeting = await conn._event(timeout=settings.greeting_timeout)
            if not (isinstance(greeting, StatusLine) and greeting.ok):
                raise UpstreamError("upstream did not greet with +OK", UpstreamFailure.GREETING)
            if settings.mode == "starttls":
                await conn._stls(tls)
        except BaseException:
            channel.abort()
            raise
        return conn

    async def _stls(self, tls: ssl.SSLContext | None) -> None:
        """STLS after the greeting (RFC 2595 section 4), then the handshake."""
        status = await self.status(Command("STLS"))
        if not status.ok:
            raise UpstreamError("upstream refused STLS (does it offer it? the upstream's "
                                "mode: plain or tls)", UpstreamFailure.STLS)
        # RFC 2595 section 4 from the other side: anything the server sent after its +OK
        # arrived in plaintext and must not be taken as a TLS-protected answer.
        if self.framer.buffered() or self._channel.unread:
            raise UpstreamError("upstream sent data after STLS +OK (injection?)",
                                UpstreamFailure.STLS)
        await self._start_tls(tls)

    async def _start_tls(self, tls: ssl.SSLContext | None) -> None:
        if tls is None:
            raise UpstreamError("upstream TLS requested but no TLS context configured",
                                UpstreamFailure.TLS)
        name = self._settings.server_name or self._settings.host
        try:
            await self._channel.start_tls(
                tls,
                server_side=False,
                server_hostname=name,
                timeout=self._settings.greeting_timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise UpstreamError(f"certificate verification failed: {exc.verify_message}",
                                UpstreamFailure.TLS_VERIFY) from None
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise UpstreamError(f"TLS handshake failed ({name}:{self._settings.port}): "
                                f"{why_failed(exc, self._settings.greeting_timeout)}",
                                UpstreamFailure.TLS) from None

    def send(self, cmd: Command) -> None:
        self._channel.write(self.framer.send_command(cmd))

    def send_all(self, cmds: tuple[Command, ...]) -> None:
        """Several commands in one write (only where ``pipelining``, RFC 2449 s6.6); read each
        answers in order (``read_listings``)."""
        self._channel.write(b"".join([self.framer.send_command(cmd) for cmd in cmds]))

    async def _event(self, timeout: float | None = None) -> ServerEvent:
        """The next framed event, reading from the socket as needed."""
        limit = self._settings.response_timeout if timeout is None else timeout
        try:
            while True:
                event = self.framer.next_event()
                if event is not NEED_DATA:
                    return event
                data = await self._channel.read(timeout=limit)
                self._eof = not data
                self.framer.receive_data(data)
        except (ProtocolError, OSError, TimeoutError) as exc:
            raise self._read_failure(exc) from None

    def _read_failure(self, exc: ProtocolError | OSError | TimeoutError) -> UpstreamError:
        """The ``UpstreamError`` for a failed read or a framing error."""
        if isinstance(exc, ProtocolError):
            if self._eof:  # cut off inside a status line or a body: the server closed
                return closed_early()
            return UpstreamError(f"protocol error: {exc}", UpstreamFailure.PROTOCOL)
        reason = UpstreamFailure.TIMEOUT if isinstance(exc, TimeoutError) \
            else UpstreamFailure.READ
        return UpstreamError(f"read failed: {exc.__class__.__name__}", reason)

    async def _status_line(self, single: bool = False) -> StatusLine:
        """The next status line; ``single``: one that no body may follow.

        Reads as ``_event`` does, not through it: a frame less at each await (a login's
        answers, every relayed command's)."""
        framer = self.framer
        try:
            while (event := framer.next_event()) is NEED_DATA:
                data = await self._channel.read(timeout=self._settings.response_timeout)
                self._eof = not data
                framer.receive_data(data)
        except (ProtocolError, OSError, TimeoutError) as exc:
            raise self._read_failure(exc) from None
        if isinstance(event, StatusLine):
            if single and event.multiline:
                raise UpstreamError("unexpected response framing", UpstreamFailure.PROTOCOL)
            return event
        if isinstance(event, ConnectionClosed):
            raise closed_early()
        raise UpstreamError("body data where a status line was due", UpstreamFailure.PROTOCOL)

    def request(self, cmd: Command) -> Coroutine[None, None, StatusLine]:
        """Send ``cmd`` and return its status line; if ``multiline``, the body follows (read
        it with ``body()`` or ``read_unstuffed`` before the next request's answer).

        Sends at once and hands over ``_status_line``'s coroutine (a frame less per await)."""
        self.send(cmd)
        return self._status_line()

    def body(self) -> BodyChunks:
        """The multi-line body after a ``multiline`` status line, chunk by chunk."""
        return BodyChunks(self)

    async def read_unstuffed(self, limit: int) -> bytes:
        """The whole multi-line body, dot-stuffing removed; ``UpstreamError`` (protocol) if
        it grows past ``limit`` octets (the caller names the limit and its reason)."""
        unstuffer, body = Unstuffer(), bytearray()
        async for chunk in BodyChunks(self):
            body += unstuffer.feed(chunk)
            if len(body) > limit:
                raise UpstreamError(f"multi-line answer over {limit} octets",
                                    UpstreamFailure.PROTOCOL)
        return bytes(body)

    def status(self, cmd: Command) -> Coroutine[None, None, StatusLine]:
        """Send a single-line command and return its status line (as ``request``)."""
        self.send(cmd)
        return self._status_line(single=True)

    async def pipelined_login(self, user: bytes, password: bytes) -> StatusLine:
        """USER and PASS in one write (the server lists PIPELINING, RFC 2449 section 6.6);
        the first failure, else PASS's status."""
        framer = self.framer  # (rendered as every command is: the upstream sees no other form)
        self._channel.write(framer.send_command(Command("USER", (user,)))
                            + framer.send_command(Command("PASS", (password,))))
        self._channel.flush()
        # Servers that keep Nagle on (Dovecot's login process) hold the second answer until
        # the first is acknowledged; a delayed ACK would stall the login for ~40 ms.
        self._channel.quick_ack()
        # Not through a helper coroutine: each frame is resumed at every await of a login.
        status = await self._status_line(single=True)
        if status.ok:
            return await self._status_line(single=True)
        # The first failed: its answer is the one that counts, whatever the server does with
        # the second line (answers it, closes, or sends garbage; the connection is dropped).
        with contextlib.suppress(UpstreamError):
            await self._status_line(single=True)
        return status

    async def capabilities(self) -> tuple[Capability, ...]:
        """CAPA before login (RFC 2449 section 5); empty if the server does not know it.

        Raises ``UpstreamError`` if the answer is not a well-formed one within the greeting
        timeout (a server that closes on unknown commands, a +OK without a list, ...): the
        caller then logs in on a fresh connection without pipelining.
        """
        try:
            async with asyncio.timeout(self._settings.greeting_timeout):
                status = await self.request(Command("CAPA"))
                body = await self.read_unstuffed(MAX_CAPA_BODY) if status.multiline else None
        except TimeoutError:
            raise UpstreamError("no complete CAPA answer", UpstreamFailure.TIMEOUT) from None
        try:
            return () if body is None else parse_capa_body(body)
        except ProtocolError:
            return ()  # a garbled list: behave as for a server without CAPA

    def rest(self) -> None:
        """No answer is awaited until the next request: the socket need not be watched, from
        a moment on (``resting``: a busy session's next command comes sooner)."""
        rest_soon(self._channel)

    def close(self) -> None:
        """Close without QUIT: nothing is committed upstream (RFC 1939 section 6)."""
        self._channel.close()


class BodyChunks:
    """``async for chunk in upstream.body()``: a multi-line body as it arrives, still
    dot-stuffed and without its terminator; ends at the terminator.  One await per chunk,
    as cheap as reading events directly (the hot loop of every RETR)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn = conn

    def __aiter__(self) -> BodyChunks:
        return self

    async def __anext__(self) -> bytes:
        event = await self._conn._event()
        if isinstance(event, BodyData):
            return event.data
        if isinstance(event, EndOfBody):
            raise StopAsyncIteration
        raise closed_early()


__all__ = [
    "BodyChunks", "ChannelClosed", "UpstreamConnection", "UpstreamError", "UpstreamFailure",
    "closed_early",
]


# A mailbox view's listings: UIDL and LIST (RFC 1939 sections 7 and 5), in that order.
LISTINGS = (Command("UIDL"), Command("LIST"))


async def read_listing(up: UpstreamConnection, verb: str) -> dict[int, bytes]:
    """``n value`` lines of the upstream's UIDL or LIST (RFC 1939 sections 5 and 7)."""
    return (await read_listings(up, (Command(verb),)))[0]


async def read_listings(up: UpstreamConnection, cmds: tuple[Command, ...] = LISTINGS
                        ) -> list[dict[int, bytes]]:
    """The listing of each command (``LISTINGS``: made once, not per login); they go in
    one write where the server lists PIPELINING (RFC 2449 s6.6): one round trip for UIDL and
    LIST instead of two.  A loop, not a list comprehension (an await in one is a coroutine
    of its own, resumed at each read), with a listing all here parsed without a coroutine."""
    if up.pipelining:
        up.send_all(cmds)
    answers: list[dict[int, bytes]] = []
    for cmd in cmds:
        status = await (up._status_line() if up.pipelining else up.request(cmd))
        entries = _whole_listing(up, cmd.verb, status)
        answers.append(await _listing_answer(up, cmd.verb, status) if entries is None
                       else entries)
    return answers


def _whole_listing(up: UpstreamConnection, verb: str,
                   status: StatusLine) -> dict[int, bytes] | None:
    """The listing after ``status`` if all of it is received already (most are: the
    framer's whole_body), parsed within pop3.listing's bounds; None: read it as it comes."""
    try:
        whole = up.framer.whole_body() if status.multiline else b""
        if whole is None:
            return None
        entries = parse_listing(whole)
    except ProtocolError as exc:
        raise UpstreamError(f"{verb} answer: {exc}", UpstreamFailure.PROTOCOL) from None
    if not status.ok:
        raise UpstreamError(f"upstream refused {verb}", UpstreamFailure.PROTOCOL)
    return entries


async def _listing_answer(up: UpstreamConnection, verb: str,
                          status: StatusLine) -> dict[int, bytes]:
    # Parsed as it arrives, within pop3.listing's bounds (line length, entry count).
    try:
        reader, unstuffer = ListingReader(), Unstuffer()
        async for chunk in up.body():
            reader.feed(unstuffer.feed(chunk))
        entries = reader.finish()
    except ProtocolError as exc:
        raise UpstreamError(f"{verb} answer: {exc}", UpstreamFailure.PROTOCOL) from None
    if not status.ok:
        raise UpstreamError(f"upstream refused {verb}", UpstreamFailure.PROTOCOL)
    return entries
