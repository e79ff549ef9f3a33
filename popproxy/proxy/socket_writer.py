"""The write side of a ``SocketChannel``: coalescing, sending, back-pressure.

Split from ``socket_channel.py`` (house rule: small modules) as a mixin with no slots of its
own.  What it keeps from the transport it replaces:

- Small writes wait for the end of the event-loop step and go out together (as the memory-BIO
  TLS of the channel before did): each loopback send costs as much CPU as a POP3 command's
  handling, and with TLS one write is also one record.
- Large writes go to OpenSSL in record-sized slices (RFC 8446 section 5.1).  CPython does not
  set ``SSL_MODE_ENABLE_PARTIAL_WRITE``, so a slice that raised ``SSLWantWriteError`` is
  retried with exactly the same bytes (``_retry``) before anything else.
- What the kernel does not take waits in ``_out`` with the file descriptor watched for
  writing; ``write_paused`` and ``drain`` follow asyncio's high/low-water marks.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

from popproxy.proxy.channel_errors import ChannelClosed
from popproxy.proxy.tls_socket import TlsSocket

# Coalesce small writes until the end of the loop step, up to this many bytes (one TLS
# record's worth, RFC 8446 section 5.1).
COALESCE_LIMIT = 16 * 1024
# One TLS record's worth of plaintext per SSL_write (RFC 8446 section 5.1).
TLS_WRITE_SLICE = 16 * 1024
# asyncio's default write-buffer water marks (selector transports): pause the writer above
# the high one, resume it at or below the low one.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# Linux only (TCP_QUICKACK, tcp(7)); looked up once.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class SocketWriter:
    """``write``, ``flush``, ``drain``, ``write_paused`` for a socket the channel owns."""

    if not TYPE_CHECKING:  # no instance dict; mypy would take it to mean "no attributes"
        __slots__ = ()
    _loop: asyncio.AbstractEventLoop
    _fd: int
    _sock: socket.socket
    _tls: TlsSocket | None
    _handshake: asyncio.Future[None] | None
    _out: list[bytes]
    _out_size: int
    _retry: bytes | None
    _writing: bool
    _flush_scheduled: bool
    # True from when more than HIGH_WATER bytes wait for a peer that does not read until they
    # are down to LOW_WATER again (asyncio's marks).  An attribute, not a property: the
    # session looks at it after every command (issue 18).
    write_paused: bool
    _drain_waiter: asyncio.Future[None] | None
    _closing: bool
    _closed: bool
    _failed: bool
    _eof: bool
    _read_wants_write: bool

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _finish_close(self) -> None:
        raise NotImplementedError

    def _read_after_write(self) -> None:
        """An SSL_read or handshake step that had to write first may go on now."""
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Queue ``data``; sent at the end of this loop step, or now past COALESCE_LIMIT."""
        if self._closing or self._closed or not data:
            return
        self._out.append(data)
        self._out_size += len(data)
        if self._writing or self._handshake is not None:
            self._check_high_water()  # sent when the socket is writable / TLS is up
        elif self._out_size >= COALESCE_LIMIT:
            self._send_out()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if not self._writing and not self._closed and self._handshake is None:  # flush(),
            self._send_out()  # inlined: one call less per reply (issue 18)

    def flush(self) -> None:
        """Send what waits now (e.g. before ``quick_ack``), unless the kernel is full."""
        if not self._writing and not self._closed and self._handshake is None:
            self._send_out()

    def quick_ack(self) -> None:
        """Acknowledge the next segments at once (Linux TCP_QUICKACK, not sticky)."""
        if _QUICKACK is not None and not self._closed:
            try:  # noqa: SIM105  (contextlib.suppress: three Python calls every login)
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except OSError:
                pass

    async def drain(self) -> None:
        """Wait until what waits falls to LOW_WATER; ``ChannelClosed`` if the peer is gone."""
        if self._closing or self._closed:
            if self._failed or self._eof:
                raise ChannelClosed("connection closed")
            return
        while self.write_paused:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
            if self._closed:
                raise ChannelClosed("connection closed while writing")

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_high_water(self) -> None:
        waiting = self._out_size + (len(self._retry) if self._retry is not None else 0)
        if waiting > HIGH_WATER:
            self.write_paused = True
        elif self.write_paused and waiting <= LOW_WATER:
            self.write_paused = False
            self._wake_drain()

    def _send_out(self) -> None:
        """Hand everything that waits to the kernel (OpenSSL); watch for writability if it
        does not all go; finish a requested close once it has."""
        try:
            if self._retry is not None and not self._send_retry():
                return self._wait_writable()
            if self._out:
                data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                self._out_size = 0
                # A reply (one TLS record) or a plain write, here rather than in a helper: a
                # call less per reply (issue 18).
                tls, rest = self._tls, b""
                if tls is None:
                    try:
                        rest = data[self._sock.send(data):]
                    except (BlockingIOError, InterruptedError):
                        rest = data
                elif len(data) <= TLS_WRITE_SLICE:  # one record, no slicing
                    try:
                        tls.write(data)
                    except ssl.SSLWantWriteError:
                        self._retry = bytes(data)  # (bytes: the same object, no copy)
                else:
                    rest = self._send_tls(data)
                if rest:
                    self._out.append(rest)
                    self._out_size = len(rest)
                if rest or self._retry is not None:
                    return self._wait_writable()
        except OSError as exc:  # reset, broken pipe; ssl.SSLError (SSLWantReadError: a
            self._fail(exc)  # renegotiation, which TLS 1.3 has not and we never ask for)
            return None
        if self.write_paused:  # all sent: only a paused writer has anything to check
            self._check_high_water()
        # Not while a read or handshake step still waits to write (its retry raised
        # SSLWantWriteError again: a flight needing three or more writable rounds).
        if self._writing and not self._read_wants_write:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if self._closing:
            self._finish_close()
        return None

    def _send_tls(self, data: bytes) -> bytes:
        """Records for ``data`` (more than one: ``_send_out`` writes a single one), a slice at
        a time; what was not sent (``_retry`` holds the slice OpenSSL must get again)."""
        tls = self._tls
        assert tls is not None
        view = memoryview(data)
        for start in range(0, len(view), TLS_WRITE_SLICE):
            piece = view[start : start + TLS_WRITE_SLICE]
            try:
                tls.write(piece)
            except ssl.SSLWantWriteError:
                self._retry = bytes(piece)
                return bytes(view[start + len(piece) :])
        return b""

    def _send_retry(self) -> bool:
        """The slice that raised SSLWantWriteError, again; whether it went."""
        assert self._tls is not None and self._retry is not None
        try:
            self._tls.write(self._retry)
        except ssl.SSLWantWriteError:
            return False
        self._retry = None
        return True

    def _wait_writable(self) -> None:
        self._check_high_water()
        if not self._writing and not self._closed:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        if self._read_wants_write:  # a read or handshake step that had to write first
            self._read_wants_write = False
            self._read_after_write()
            if self._closed:
                return
        self._send_out()
