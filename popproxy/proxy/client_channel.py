"""What a client connection is to the session, the relay, the server and the shutdown notice.

``socket_channel.SocketChannel`` satisfies it: the server gives one to every client (it reads
its socket itself: no transport, and TLS on the file descriptor, issue 18), and the session
tests get one too (tests/support/harness.py).  The session, relay and shutdown code are typed
against this protocol, not the class, so they see only what a client connection offers.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol

from popproxy.wire.proxyproto import ProxyHeader


class TlsInfo(Protocol):
    """What the session asks of the TLS connection (``ssl.SSLObject`` or ``ssl.SSLSocket``)."""

    def version(self) -> str | None: ...

    def cipher(self) -> tuple[str, str, int] | None: ...


class ClientChannel(Protocol):
    """One client connection's bytes, TLS included (see ``SocketChannel`` for each method)."""

    proxy_header: asyncio.Future[ProxyHeader] | None

    @property
    def unread(self) -> int: ...

    @property
    def awaiting_read(self) -> bool: ...

    @property
    def write_paused(self) -> bool: ...  # (SocketChannel: an attribute, read at every command)

    @property
    def tls_active(self) -> bool: ...

    @property
    def handshaking(self) -> bool: ...

    def read(self, timeout: float | None = None) -> Awaitable[bytes]: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def ssl_object(self) -> TlsInfo | None: ...

    def start_implicit_tls(self) -> asyncio.Future[None]: ...

    def switch_to_tls(
        self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> asyncio.Future[None]: ...

    def close(self) -> None: ...

    def flush(self) -> None: ...

    def quick_ack(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...

    def peername(self) -> Any: ...
