"""A connection that reads its socket itself: ``loop.add_reader`` on a non-blocking socket
and, for TLS, OpenSSL on the same file descriptor (``tls_socket``: no ``ssl.SSLSocket``).

Why not a protocol on an asyncio transport, TLS through an ``ssl.SSLObject`` over two memory
BIOs (the channel before this one): idle memory (issue 18, Build item 6).  The memory BIOs
keep about 2.8 KiB per connection after the handshake and the transport another 1.5-1.9 KiB;
a socket read by OpenSSL itself needs neither.  Clients (``acceptor``) and upstreams
(``upstream_socket``) both.

What has to hold, and how it holds here:

- STLS (RFC 2595 section 4, CVE-2011-0411): ``switch_to_tls`` refuses while received
  plaintext is unread; bytes still in the kernel at the switch are read by OpenSSL, so every
  byte after it is TLS.
- Implicit TLS (port 995): nothing is read before ``start_implicit_tls`` (the allowlist
  decides first): not one byte is plaintext, and a refused client sees no certificate.
- A PROXY header is found with ``MSG_PEEK`` and exactly its bytes are taken
  (``wire.proxyproto_length``): a TLS ClientHello behind it stays there for OpenSSL.
- Reads go into one shared per-thread buffer; what OpenSSL holds does not wake the loop, so TLS
  reads go on while ``pending()`` says so; both go on while reads are big (``BULK_READ``).
- The peer's FIN does not close our side (pipelined commands still get every answer);
  ``close`` sends what waits (for CLOSE_TIMEOUT at most), then close_notify, then closes;
  ``abort`` drops at once.  The loop stops watching the descriptor before it is closed
  (uvloop requires it); ``rest`` stops it while nothing is expected (an idle upstream).
Writes: ``socket_writer.SocketWriter``; the read queue: ``read_queue.ReadQueue``; the PROXY
header: ``proxy_header_reader``; TLS on the descriptor: ``tls_socket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

from popproxy.proxy import deadlines
from popproxy.proxy.channel_errors import (
    ChannelClosed,
    consume_exception,
    reset_behind_read,
)
from popproxy.proxy.proxy_header_reader import ProxyHeaderReader
from popproxy.proxy.read_queue import MAX_UNREAD, ReadQueue, buffers, receive_buffer
from popproxy.proxy.socket_writer import SocketWriter
from popproxy.proxy.tls_socket import TlsOwner, TlsSocket, close_notify, handshake_done, wrap
from popproxy.wire.proxyproto import ProxyHeader, ProxyHeaderParser

# Seconds a graceful close waits for the peer to take some of what is still queued (HIGH_WATER
# at most: a session aborts a paused writer instead) before it aborts; each time it took some,
# it gets as long again (a slow link reading the end of a RETR).  asyncio's SSL_SHUTDOWN_TIMEOUT
# bounds its transports' TLS close the same way.
CLOSE_TIMEOUT = 30.0
# Reads (256 KiB buffer) of input thrown away before a close; past that a peer gets a reset.
DISCARD_READS = 4
# A read this big is bulk (an upstream RETR; for TLS a full record, 2^14 bytes, RFC 8446 s5.1):
# read again, up to 4 plain reads (of 256 KiB) or 64 records per wake-up, about 1 MiB either
# way (one per wake-up cost 25 % more CPU per relayed MB: bench/README.md, "Idle memory").
BULK_READ, BULK_READS, BULK_RECORDS = 16 * 1024, 4, 64


class SocketChannel(ReadQueue, SocketWriter, TlsOwner, ProxyHeaderReader):
    """One connected socket (a client, or an upstream): ``read``/``write``/``drain``/``close``."""

    # One per connection lives as long as it does (idle memory per session); __weakref__:
    # the TLS handshake's owner (tls_socket, SNI).
    __slots__ = (
        "__weakref__", "_chunks", "_close_timer", "_closed", "_closing", "_deadline",
        "_drain_waiter", "_eof", "_failed", "_fd", "_flush_scheduled", "_handshake",
        "_implicit_tls", "_loop", "_out", "_out_size", "_proxy_left", "_proxy_parser",
        "_proxy_seen", "_read_paused", "_read_timer", "_read_waiter", "_read_wants_write",
        "_reading", "_retry", "_sock", "_tls", "_unread", "_writing", "proxy_header",
        "write_paused",
    )

    def __init__(self, sock: socket.socket, implicit_tls: ssl.SSLContext | None = None,
                 proxy_header: bool = False, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``sock``: connected and non-blocking.  ``implicit_tls``: the server context of a
        port-995 listener, started by ``start_implicit_tls``.  ``proxy_header``: the first
        bytes must be a PROXY protocol header (``proxy_header`` resolves with it).  ``loop``:
        the running loop, if the creator has it (asking costs a getpid() on CPython 3.11)."""
        loop = self._loop = asyncio.get_running_loop() if loop is None else loop
        if not hasattr(buffers, "view"):  # made for this thread now: reads take buffers.view
            receive_buffer()
        self._sock, self._fd = sock, sock.fileno()
        self._tls: TlsSocket | None = None
        self._implicit_tls = implicit_tls
        self._handshake: asyncio.Future[None] | None = None
        self._chunks: list[bytes] = []  # a list: an empty deque costs ~1 KiB per idle session
        self._unread, self._eof, self._failed, self._deadline = 0, False, False, 0.0
        self._read_waiter: asyncio.Future[bytes] | None = None
        self._read_timer: deadlines.Timer | None = None
        self._read_paused = self._read_wants_write = self._reading = False
        self._out: list[bytes] = []
        self._out_size, self._retry = 0, None
        self._writing = self._flush_scheduled = self.write_paused = False
        self._closing = self._closed = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._proxy_parser = ProxyHeaderParser() if proxy_header else None
        self._proxy_seen: bytearray | None = bytearray() if proxy_header else None
        self._proxy_left = -1  # header bytes still to take, once its length is known
        self.proxy_header: asyncio.Future[ProxyHeader] | None = None
        if proxy_header:
            self.proxy_header = loop.create_future()
            self.proxy_header.add_done_callback(consume_exception)
        if proxy_header or implicit_tls is None:  # port 995: not one byte before the policy
            self._start_reading()

    # ------------------------------------------------------------ readiness
    def _start_reading(self) -> None:
        if not self._reading and not self._closing and not self._read_paused:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)
    _pause_reading = _stop_reading

    def _resume_reading(self) -> None:
        if self._eof or self._read_wants_write:  # (the writer starts it again then)
            return
        if self._tls is not None or self._implicit_tls is None:
            self._start_reading()

    def rest(self) -> None:
        """Stop watching the socket until a ``read`` waits: nothing is expected (an idle
        session's upstream).  A watched descriptor is about 0.55 KiB on uvloop (its poll
        handle, the callback's handle and context); what arrives meanwhile waits in the
        kernel.  Not with bytes inside OpenSSL, which would not wake the loop."""
        if self._reading and self._handshake is None and not self._read_wants_write and (
                self._tls is None or not self._tls.pending()) and not self.awaiting_read:
            self._stop_reading()

    def _on_readable(self) -> None:
        if self._proxy_parser is not None:
            self._read_proxy_header()
        elif self._handshake is not None:
            self._advance_handshake()
        else:
            self._read_tls() if self._tls is not None else self._read_plain()
            if self._reading and reset_behind_read(self._loop, self._sock):
                self._peer_closed()  # the bytes read stay ahead of the end, which comes as EOF
            self._wake_reader()  # once: what one wake-up read is one read()

    def _read_after_write(self) -> None:
        self._start_reading()  # stopped while OpenSSL waited to write (no spinning reads)
        self._on_readable()

    def _read_plain(self) -> None:
        view = buffers.view  # this thread's (a channel is read on its loop's thread only)
        for _ in range(BULK_READS):
            try:
                size = self._sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            if not size:
                self._peer_closed()
                return
            self._chunks.append(bytes(view[:size]))  # _deliver, inlined (every read)
            self._unread += size
            if self._unread > MAX_UNREAD:
                self._pause_if_full()
            if size < BULK_READ or not self._reading:  # a reply (no EAGAIN read), or paused
                return

    def _read_tls(self) -> None:
        tls, view = self._tls, buffers.view
        assert tls is not None
        records = 0
        while True:
            try:
                size = tls.read(len(view), view)  # close_notify: 0
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:  # a key update to answer, send buffer full
                self._stop_reading()
                self._read_wants_write = True
                self._wait_writable()
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # (EOF: no close_notify)
                size = 0
            except OSError as exc:  # ssl.SSLError, resets
                self._fail(exc)
                return
            if not size:
                self._peer_closed()
                return
            self._chunks.append(bytes(view[:size]))  # _deliver, inlined (every record)
            self._unread += size
            if self._unread > MAX_UNREAD:
                self._pause_if_full()
            records += 1  # one per SSL_read; what OpenSSL holds does not wake the loop, and
            # after a small record a read would only raise SSLWantReadError (costly: issue 18)
            more = tls.pending() or (size >= BULK_READ and records < BULK_RECORDS)
            if not self._reading or not more:
                return

    def _peer_closed(self) -> None:
        """FIN (or close_notify): EOF for the reader; our side stays open (half-close)."""
        self._stop_reading()
        self._set_eof()

    # ------------------------------------------------------------ TLS
    @property
    def tls_active(self) -> bool:
        return self._tls is not None

    @property
    def handshaking(self) -> bool:
        """A TLS handshake has started and not finished: no application data can be sent."""
        return self._handshake is not None

    def ssl_object(self) -> TlsSocket | None:
        return self._tls

    def start_implicit_tls(self) -> asyncio.Future[None]:
        """Begin the port-995 handshake: the first byte read from the socket is OpenSSL's."""
        assert self._implicit_tls is not None
        ctx, self._implicit_tls = self._implicit_tls, None
        return self.switch_to_tls(ctx, server_side=True)

    def switch_to_tls(
        self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> asyncio.Future[None]:
        """Switch to TLS now, synchronously; returns the handshake's future.

        Every byte read after this call is TLS.  Raises ``RuntimeError`` if received
        plaintext is still unread: the caller must refuse STLS first (RFC 2595 section 4,
        CVE-2011-0411).  Plaintext replies still queued (the ``+OK`` to STLS) are sent first;
        ``ChannelClosed`` if the peer does not take them.  The future fails with
        ``ssl.SSLError`` or ``ChannelClosed`` if the handshake does.
        """
        if self._unread or self._chunks:
            raise RuntimeError("plaintext is pending: refusing to start TLS over it")
        if self._tls is not None:
            raise RuntimeError("TLS is already active")
        self.flush()
        if self._out or self._closed:
            self.abort()
            raise ChannelClosed("the peer does not read: plaintext still queued at STLS")
        handshake = self._loop.create_future()
        handshake.add_done_callback(consume_exception)  # seen even if nobody awaits it
        try:
            self._sock, self._tls = wrap(ctx, self._sock, server_side=server_side,
                                         server_hostname=server_hostname, owner=self)
        except OSError as exc:  # reset already: our socket is detached, and the SSLSocket it
            self._eof = True  # raised from owns the descriptor (and closes it once freed)
            self._fail(exc)
            handshake.set_exception(ChannelClosed(f"connection lost before TLS: {exc}"))
            return handshake
        self._handshake = handshake
        self._start_reading()
        self._advance_handshake()  # the ClientHello may be in the kernel already
        return handshake

    async def start_tls(self, ctx: ssl.SSLContext, *, server_side: bool,
                        server_hostname: str | None = None, timeout: float = 10.0) -> None:
        """``switch_to_tls`` and wait for the handshake (``TimeoutError`` after ``timeout``)."""
        handshake = self.switch_to_tls(ctx, server_side=server_side,
                                       server_hostname=server_hostname)
        async with asyncio.timeout(timeout):
            await handshake

    def _advance_handshake(self) -> None:
        tls = self._tls
        assert tls is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLWantWriteError:  # the server flight did not fit the send buffer
            self._stop_reading()
            self._read_wants_write = True
            self._wait_writable()
            return
        except ssl.SSLError as exc:  # the alert is sent already (socket BIO)
            self._end_handshake(exc)
            self._fail(exc)
            return
        except OSError as exc:
            self._end_handshake(ChannelClosed(f"connection lost during TLS handshake: {exc}"))
            self._fail(exc)
            return
        self._end_handshake(None)
        if self._out and not self._writing:
            self._send_out()

    def _end_handshake(self, exc: BaseException | None) -> None:
        handshake, self._handshake = self._handshake, None
        if self._tls is not None:
            handshake_done(self._tls)
        if handshake is None or handshake.done():
            return
        if exc is None:
            handshake.set_result(None)
        else:
            handshake.set_exception(exc.with_traceback(None))  # no cycle: see _fail

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Close gracefully: what waits is sent, then TLS close_notify, then FIN."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._stop_reading()
        if self._handshake is not None:  # nothing can be sent mid-handshake
            self._out.clear()
        if self._out or self._retry is not None:
            # A peer that never reads would hold this channel forever: bounded, then dropped.
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_stalled,
                                                      self._out_size)
            if not self._writing:
                self._send_out()  # finishes the close once everything went
            return
        self._finish_close()

    def _close_stalled(self, waiting: int) -> None:
        """CLOSE_TIMEOUT went by in a close: a peer still taking bytes (a slow link reading
        the end of a RETR) gets another period, one that took none is dropped."""
        if self._out_size < waiting:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_stalled,
                                                      self._out_size)
        else:
            self.abort()

    def _finish_close(self) -> None:
        tls = self._tls
        if tls is not None and self._handshake is None:
            # RFC 8446 section 6.1 close_notify; not waiting for the peer's (a non-blocking
            # unwrap raises SSLWantReadError once it has sent ours).
            with contextlib.suppress(OSError, ValueError):
                close_notify(tls)
        self._teardown()

    def _fail(self, exc: BaseException) -> None:
        # A flag, not ``exc``: whoever catches it links it to their frames, and so to this
        # channel; kept, it made every failed connection a cycle freed only by the GC.
        self._failed = True
        self._teardown()

    def abort(self) -> None:
        """Drop the connection at once; used when the peer is hostile or gone."""
        self._teardown()

    def _teardown(self) -> None:
        """Stop watching the descriptor, close it, tell whoever waits."""
        if self._closed:
            return
        self._closed = self._closing = True
        if self._reading:  # (a close() stopped it already: no call then)
            self._stop_reading()
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        self._out.clear()
        self._out_size, self._retry = 0, None
        if not self._eof:  # (after the peer's FIN there is nothing left to read)
            self._discard_input()
        self._sock.close()
        self._drop_read_timer()
        if self._close_timer is not None:  # (it would keep this channel alive)
            self._close_timer.cancel()
            self._close_timer = None
        self._set_eof()
        self.write_paused = False
        if self._drain_waiter is not None:  # (checked here: a call less per connection)
            self._wake_drain()
        if self.proxy_header is not None and not self.proxy_header.done():
            self.proxy_header.set_exception(ChannelClosed("closed before the PROXY header"))
        if self._handshake is not None:  # (none: its end has let go of the owner already)
            self._end_handshake(ChannelClosed("connection lost during TLS handshake"))

    def _discard_input(self) -> None:
        """Read away what the kernel still holds: closing a socket with unread input sends a
        reset, which can destroy our last reply (an -ERR, a TLS alert) at the peer; a
        transport had always read everything, so its peers got a FIN.  Raw reads, below
        TLS: nothing of it is looked at."""
        view = buffers.view  # (__init__ made it for this thread)
        for _ in range(DISCARD_READS):
            try:
                if not socket.socket.recv_into(self._sock, view, 0, socket.MSG_DONTWAIT):
                    return
            except OSError:  # nothing more (BlockingIOError), or already reset
                return

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def peername(self) -> Any:
        try:
            return self._sock.getpeername()
        except OSError:
            return None
