"""The PROXY protocol header of a ``SocketChannel``, read before anything else (HAProxy's
PROXY protocol spec, section 2): found with ``MSG_PEEK`` and exactly its bytes taken, so a
TLS ClientHello behind it stays in the kernel for OpenSSL (``wire.proxyproto_length``).

Split from ``socket_channel.py`` (house rule: small modules) as a mixin with no slots of its
own (the channel declares them all).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

from popproxy.pop3.events import NEED_DATA
from popproxy.proxy.read_queue import receive_buffer
from popproxy.wire.proxyproto import ProxyHeader, ProxyHeaderParser, ProxyProtocolError
from popproxy.wire.proxyproto_length import header_length

# How much of a PROXY header is peeked at once: a whole v1 line (107 bytes, PP section 2.1)
# or a v2 header within the parser's limit (16 + proxyproto.MAX_V2_PAYLOAD) in one go.
PROXY_PEEK = 2048


class ProxyHeaderReader:
    """``proxy_header`` resolves with the header; the channel reads on after it."""

    if not TYPE_CHECKING:  # no instance dict; mypy would take it to mean "no attributes"
        __slots__ = ()
    _sock: socket.socket
    _implicit_tls: ssl.SSLContext | None
    _proxy_parser: ProxyHeaderParser | None
    _proxy_seen: bytearray | None
    _proxy_left: int
    proxy_header: asyncio.Future[ProxyHeader] | None

    def _fail(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _stop_reading(self) -> None:
        raise NotImplementedError

    def _read_proxy_header(self) -> None:
        """PROXY protocol first (HAProxy spec section 2): exactly its bytes are taken."""
        view = receive_buffer()
        try:
            peeked = size = self._sock.recv_into(view, PROXY_PEEK, socket.MSG_PEEK)
            if peeked:
                size = self._sock.recv_into(view, self._proxy_take(view[:peeked]))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        data = bytes(view[:size])
        if self._proxy_left < 0 and self._proxy_seen is not None:
            self._proxy_seen += data  # bounded: the parser refuses long prefixes first
        else:
            self._proxy_left -= size
        self._feed_proxy_header(data)  # b"": EOF inside the header

    def _proxy_take(self, peeked: memoryview) -> int:
        """How many of the ``peeked`` bytes belong to the header: all of them until its length
        is known (``_proxy_seen`` holds them till then: a v1 line, a v2 fixed part), then
        what is left of it.  Consuming what belongs to the header keeps a level-triggered
        reader from spinning on an incomplete one."""
        if self._proxy_left < 0 and self._proxy_seen is not None:
            known = header_length(bytes(self._proxy_seen) + bytes(peeked))
            if known is not None:
                self._proxy_left = known - len(self._proxy_seen)
        return len(peeked) if self._proxy_left < 0 else min(len(peeked), self._proxy_left)

    def _feed_proxy_header(self, data: bytes) -> None:
        parser, waiter = self._proxy_parser, self.proxy_header
        assert parser is not None and waiter is not None
        parser.receive_data(data)
        try:
            event = parser.next_event()
        except ProxyProtocolError as exc:
            self._proxy_parser = self._proxy_seen = None
            if not waiter.done():
                waiter.set_exception(exc)
            self._fail(exc)
            return
        if event is NEED_DATA:
            return
        assert isinstance(event, ProxyHeader) and not parser.remaining()
        self._proxy_parser = self._proxy_seen = None
        if not waiter.done():
            waiter.set_result(event)
        if self._implicit_tls is not None:
            self._stop_reading()  # the ClientHello waits in the kernel for the policy
