"""A TCP connection with optional TLS, owned end to end by popproxy.

Why not asyncio streams + ``start_tls``: (1) the STLS rule of RFC 2595 section 4 ("the client
MUST NOT send further commands until it receives the server's response", and a server must not
act on plaintext sent after STLS: CVE-2011-0411) has to hold by construction, which needs to know
exactly which bytes arrived before the switch; asyncio's buffer handling across ``start_tls`` is
private and has changed between releases.  (2) asyncio's TLS transport keeps a 256 KiB buffer per
connection; an idle POP3 session should cost a few KiB.

So a ``Channel`` is an ``asyncio.BufferedProtocol`` that reads every socket into one shared
per-thread buffer (``get_buffer`` and ``buffer_updated`` run back to back) and, once TLS is on,
hands the records to a ``tls_pump.TlsPump`` (``ssl.SSLObject`` over memory BIOs).  Received
bytes queue in ``_chunks`` until ``read`` takes them.

No connection of the proxy is a ``Channel`` any more: clients and upstreams get a
``socket_channel.SocketChannel`` (less memory per idle session, issue 18).  What is left here
in production use: ``ChannelClosed`` and the shared ``receive_buffer``.  ``Channel`` itself
(and ``tls_pump``) still carries the session tests, which drive it over an in-memory
transport (tests/support/harness.py, memtransport.py); ``open_channel`` here is theirs too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from popproxy.pop3.events import NEED_DATA
from popproxy.proxy import deadlines
from popproxy.proxy.read_queue import MAX_UNREAD, ReadQueue
from popproxy.proxy.tls_pump import TlsPump, consume_exception
from popproxy.wire.proxyproto import ProxyHeader, ProxyHeaderParser, ProxyProtocolError

# Size of the shared receive buffer: large reads keep multi-MiB RETR relays cheap.
READ_BUFFER_SIZE = 256 * 1024
_local = threading.local()


def receive_buffer() -> memoryview:
    """This thread's receive buffer, made once (``get_buffer`` reads ``_local.view`` inline;
    ``socket_channel`` reads into it too: every read is copied out at once)."""
    try:
        return _local.view  # type: ignore[no-any-return]
    except AttributeError:
        view = _local.view = memoryview(bytearray(READ_BUFFER_SIZE))
        return view


class ChannelClosed(ConnectionError):
    """The peer went away (or TLS failed) while we were reading or writing."""


class Channel(ReadQueue, asyncio.BufferedProtocol):
    """One connection: ``read``/``write``/``drain``/``start_tls``/``close``."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_chunks", "_deadline", "_drain_waiter", "_eof", "_error", "_held", "_implicit_tls",
        "_on_connected", "_proxy_parser", "_read_paused", "_read_timer", "_read_waiter", "_tls",
        "_transport", "_unread", "_write_paused", "proxy_header"
    )

    def __init__(
        self, implicit_tls: ssl.SSLContext | None = None, proxy_header: bool = False,
        on_connected: Callable[[Channel], object] | None = None,
    ) -> None:
        """``implicit_tls``: a server context to start TLS with as soon as the TCP connection
        exists (port 995 style), so not one byte is ever read as plaintext.
        ``proxy_header``: the first bytes must be a PROXY protocol header; nothing else (not
        even a TLS ClientHello) is looked at before it is complete and valid.
        ``on_connected``: called once with this channel when the connection exists (the
        server starts the session's task there: a callback, not a future per connection)."""
        self._implicit_tls = implicit_tls
        self._held: bytearray | None = None  # implicit TLS bytes before the policy said yes
        self._on_connected = on_connected
        loop = asyncio.get_running_loop()
        self._proxy_parser = ProxyHeaderParser() if proxy_header else None
        self.proxy_header: asyncio.Future[ProxyHeader] | None = (
            loop.create_future() if proxy_header else None
        )
        if self.proxy_header is not None:
            self.proxy_header.add_done_callback(consume_exception)
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []  # a list: an empty deque costs ~1 KiB per idle session
        self._unread = 0
        self._eof = False
        self._error: BaseException | None = None
        self._read_waiter: asyncio.Future[bytes] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._tls: TlsPump | None = None
        self._read_timer: deadlines.Timer | None = None  # one per channel, moved lazily (read)
        self._deadline = 0.0

    # ------------------------------------------------------------ protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio.Transport, so no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        callback, self._on_connected = self._on_connected, None
        if callback is not None:
            callback(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            view: memoryview = _local.view  # (an annotation, not typing.cast: no call)
        except AttributeError:
            view = receive_buffer()
        return view

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(_local.view[:nbytes])  # get_buffer ran just before, on this thread
        if self._proxy_parser is not None:
            self._feed_proxy_header(data)
        else:
            self._received(data)

    def rest(self) -> None:
        """(``SocketChannel.rest``: here the transport reads whatever comes.)"""

    def _deliver(self, data: bytes) -> None:
        super()._deliver(data)
        self._wake_reader()  # at once: bytes come from several places here (tests only)

    def _received(self, data: bytes) -> None:
        if self._tls is None and self._implicit_tls is not None:
            # No TLS (no certificate sent) until start_implicit_tls: a refused client sees none.
            held = self._held = self._held or bytearray()
            held += data
            if len(held) > MAX_UNREAD and self._transport is not None:
                self._transport.abort()
            return
        if self._tls is None:
            self._deliver(data)
        else:
            self._tls.receive(data)

    def _feed_proxy_header(self, data: bytes) -> None:
        """PROXY protocol first (HAProxy spec section 2): the rest waits until it is valid."""
        parser, waiter = self._proxy_parser, self.proxy_header
        assert parser is not None and waiter is not None
        parser.receive_data(data)
        try:
            event = parser.next_event()
        except ProxyProtocolError as exc:
            self._proxy_parser = None
            if not waiter.done():
                waiter.set_exception(exc)
            self._fail(exc)
            return
        if event is NEED_DATA:
            return
        assert isinstance(event, ProxyHeader)
        rest = parser.remaining()
        self._proxy_parser = None
        if not waiter.done():
            waiter.set_result(event)
        if rest:
            self._received(rest)

    def eof_received(self) -> bool:
        if self._proxy_parser is not None:
            self._feed_proxy_header(b"")
            return False
        if self._tls is not None:
            self._tls.receive_eof()
        self._set_eof()
        # Keep our sending side open: a client may pipeline commands and half-close, and it
        # must still receive every answer.  The session closes the socket when it is done.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._error = self._error or exc
        self._drop_read_timer()  # it would keep this channel (and its TLS) alive
        self._set_eof()
        self._wake_drain()
        if self.proxy_header is not None and not self.proxy_header.done():
            self.proxy_header.set_exception(ChannelClosed("closed before the PROXY header"))
        if self._tls is not None and self._tls.handshaking:
            self._tls.end_handshake(ChannelClosed("connection lost during TLS handshake"))

    def _pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ writing
    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if self._tls is None:
            self._transport.write(data)
            return
        self._tls.write(data)

    @property
    def write_paused(self) -> bool:
        """True while the kernel send buffer is full (the peer is not reading)."""
        return self._write_paused

    async def drain(self) -> None:
        """Wait until the kernel accepts more data (the transport's high-water mark)."""
        if self._transport is None or self._transport.is_closing():
            if self._error is not None or self._eof:
                raise ChannelClosed("connection closed")
            return
        while self._write_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
            if self._transport.is_closing():
                raise ChannelClosed("connection closed while writing")

    # ------------------------------------------------------------ TLS
    @property
    def tls_active(self) -> bool:
        return self._tls is not None

    @property
    def handshaking(self) -> bool:
        """A TLS handshake has started and not finished: no application data can be sent."""
        return self._tls is not None and self._tls.handshaking

    def ssl_object(self) -> ssl.SSLObject | None:
        return None if self._tls is None else self._tls.obj

    def start_implicit_tls(self) -> asyncio.Future[None]:
        """Begin the port-995 handshake with the bytes the client has sent so far."""
        assert self._implicit_tls is not None
        ctx, self._implicit_tls = self._implicit_tls, None
        held, self._held = bytes(self._held or b""), None
        handshake = self.switch_to_tls(ctx, server_side=True)
        if held:
            self._received(held)
        return handshake

    def switch_to_tls(
        self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> asyncio.Future[None]:
        """Switch to TLS now, synchronously; returns the handshake's future.

        Every byte received after this call is treated as TLS.  Raises ``RuntimeError`` if
        received plaintext is still unread: the caller must refuse STLS first (RFC 2595
        section 4, CVE-2011-0411).  The future fails with ``ssl.SSLError`` or
        ``ChannelClosed`` if the handshake does.
        """
        if self._unread or self._chunks:
            raise RuntimeError("plaintext is pending: refusing to start TLS over it")
        if self._tls is not None:
            raise RuntimeError("TLS is already active")
        tls = self._tls = TlsPump(
            ctx, self._transport, server_side=server_side, server_hostname=server_hostname,
            deliver=self._deliver, on_eof=self._set_eof, on_error=self._fail,
        )
        handshake = tls.handshake
        assert handshake is not None
        tls.pump()
        return handshake

    async def start_tls(
        self,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """``switch_to_tls`` and wait for the handshake (``TimeoutError`` after ``timeout``)."""
        handshake = self.switch_to_tls(
            ctx, server_side=server_side, server_hostname=server_hostname
        )
        async with asyncio.timeout(timeout):
            await handshake

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._set_eof()
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Close gracefully (TLS close_notify, then FIN) after pending writes are sent."""
        if self._transport is None or self._transport.is_closing():
            return
        if self._tls is not None:
            self._tls.close()
        self._transport.close()

    def flush(self) -> None:
        """Send coalesced TLS output now (see TLS_COALESCE_LIMIT), e.g. before ``quick_ack``."""
        if self._tls is not None:
            self._tls.flush()

    def quick_ack(self) -> None:
        """Acknowledge the next segments at once (Linux TCP_QUICKACK, not sticky)."""
        sock = None if self._transport is None else self._transport.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def abort(self) -> None:
        """Drop the connection at once (RST); used when the peer is hostile or gone."""
        if self._transport is not None:
            self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def peername(self) -> Any:
        return None if self._transport is None else self._transport.get_extra_info("peername")


async def open_channel(host: str, port: int) -> Channel:
    """Connect to ``host:port`` and return the connected ``Channel``."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Channel, host, port)
    return protocol
