"""An in-memory stream transport for driving ``Channel`` (and ``TlsPump``) without sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import trustme

from popproxy.proxy.channel import Channel


class MemoryTransport:
    """What ``Channel`` uses of an ``asyncio.Transport``, recording every call.

    With ``peer`` set, each write reaches the peer in a later loop step, as a socket's would.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.reading_paused = False
        self.peer: Callable[[bytes], None] | None = None

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        if self.peer is not None:
            asyncio.get_running_loop().call_soon(self.peer, bytes(data))

    def sent(self) -> bytes:
        return b"".join(self.written)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 40110)}.get(name, default)


def feed(channel: Channel, data: bytes) -> None:
    """What the event loop does when ``data`` arrives: a read per buffer-full."""
    while data:
        buffer = channel.get_buffer(len(data))
        size = min(len(buffer), len(data))
        buffer[:size] = data[:size]
        channel.buffer_updated(size)
        data = data[size:]


def attach(channel: Channel) -> MemoryTransport:
    transport = MemoryTransport()
    channel.connection_made(transport)  # type: ignore[arg-type]  # duck-typed, like uvloop's
    return transport


def linked_pair(
    server: Channel | None = None, client: Channel | None = None
) -> tuple[Channel, MemoryTransport, Channel, MemoryTransport]:
    """Two channels whose writes reach each other (server first)."""
    server = server or Channel()
    client = client or Channel()
    server_transport, client_transport = attach(server), attach(client)
    server_transport.peer = lambda data: feed(client, data)
    client_transport.peer = lambda data: feed(server, data)
    return server, server_transport, client, client_transport


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for ``localhost`` and a client context that trusts it."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx
