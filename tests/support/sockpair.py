"""Real loopback TCP pairs for the channels that read their sockets themselves
(``SocketChannel``, ``Acceptor``), on both event loops the proxy runs on."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable

import trustme
import uvloop

LOOPS = ["asyncio", "uvloop"]


def run(loop_name: str, main: Callable[[], Awaitable[None]], timeout: float = 10) -> None:
    """Run ``main`` on a fresh loop of the named kind, cut after ``timeout`` seconds."""
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), timeout))


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server end: non-blocking, as the acceptor makes it; client end: blocking, 5 s)."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname())
        server, _ = listening.accept()
    server.setblocking(False)
    client.settimeout(5)
    return server, client


def unix_pair() -> tuple[socket.socket, socket.socket]:
    """(the channel's end: non-blocking; the peer's end: non-blocking too): a socket pair
    whose sends are readable at the other end when ``send`` returns."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


def recv_ready(sock: socket.socket) -> bytes:
    """What ``sock`` (non-blocking) has received so far; b"" if nothing (or EOF)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def recv_until(sock: socket.socket, end: bytes) -> bytes:
    """Blocking: read from ``sock`` until the data ends with ``end`` (or EOF)."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def tls_client(sock: socket.socket, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """Blocking: the client side of a handshake over ``sock`` (run it in a thread)."""
    return ctx.wrap_socket(sock, server_hostname="localhost")


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for ``localhost`` and a client context that trusts it."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx
