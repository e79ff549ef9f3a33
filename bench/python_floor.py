"""The least a Python TLS relay can spend per session, for bench/peers.py (``--products floor``).

Issue 18 asks popproxy for at most 1.35x haproxy's CPU per TLS session.  Before asking how much
of popproxy's work per login can go, this measures what cannot: a relay that terminates TLS
with the lab's certificate on uvloop's loop (its TLS is Cython over OpenSSL's memory BIOs),
connects each client to Dovecot and copies bytes both ways, with no POP3 parsing, policy,
lockout, scanning, metrics or logs.  It is not a product and has no limits; it is the floor
any proxy written in Python with asyncio sits on, run on the same interpreter as popproxy
(``relay.PROXY_PYTHON``).

``--io sockets`` (product ``floor-sockets``) is the same relay on popproxy's own design instead:
non-blocking sockets watched with ``add_reader`` and ``ssl.SSLSocket`` (no memory BIOs), so the
two floors tell the cost of the I/O design from the cost of what popproxy does on top of it.

  python_floor.py --port N --cert server.pem --upstream 11110 [--io sockets]  # until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

try:  # the bench imports this module for FloorProxy; the relay itself runs in a child
    import relay
except ImportError:  # pragma: no cover - only when run as the child on another sys.path
    relay = None  # type: ignore[assignment]


class Pipe(asyncio.Protocol):
    """One direction's reader; writes what it reads to its peer's transport."""

    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class Client(Pipe):
    """The TLS side: opens the upstream connection once the handshake is done."""

    def __init__(self, upstream: int) -> None:
        super().__init__()
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up, proto = await loop.create_connection(Pipe, "127.0.0.1", self.upstream)
        except OSError:
            assert self.transport is not None
            self.transport.close()
            return
        # Either side may have sent before both were joined (Dovecot's greeting can arrive
        # before this coroutine resumes).
        assert self.transport is not None
        for data in proto.pending:
            self.transport.write(data)
        for data in self.pending:
            up.write(data)
        proto.pending.clear()
        self.pending.clear()
        proto.peer = self.transport
        self.peer = up


class SocketRelay:
    """``--io sockets``: one client on non-blocking sockets watched with ``add_reader``, TLS
    through ``ssl.SSLSocket`` (popproxy's ``SocketChannel`` design without its read queue,
    deadlines, write buffering or POP3 parser).  No backpressure: POP3 logins are small."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: ssl.SSLSocket,
                 upstream: int) -> None:
        self.loop, self.client, self.upstream_port = loop, client, upstream
        self.up: socket.socket | None = None
        self.connected = False
        self.pending: list[bytes] = []
        loop.add_reader(client.fileno(), self.on_handshake)

    def on_handshake(self) -> None:
        try:
            self.client.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # (a flight too big for the socket buffer: not with POP3's small ones)
        except OSError:
            self.close()
            return
        self.loop.remove_reader(self.client.fileno())
        self.loop.add_reader(self.client.fileno(), self.on_client)
        up = self.up = socket.socket()
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as uvloop's transports
        up.connect_ex(("127.0.0.1", self.upstream_port))
        self.loop.add_writer(up.fileno(), self.on_connected)

    def on_connected(self) -> None:
        assert self.up is not None
        self.loop.remove_writer(self.up.fileno())
        self.connected = True
        self.loop.add_reader(self.up.fileno(), self.on_upstream)
        for data in self.pending:
            self.up.send(data)
        self.pending.clear()

    def on_client(self) -> None:
        while True:
            try:
                data = self.client.recv(65536)
            except ssl.SSLWantReadError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            if self.connected:
                assert self.up is not None
                self.up.send(data)
            else:
                self.pending.append(data)

    def on_upstream(self) -> None:
        assert self.up is not None
        try:
            data = self.up.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        try:
            self.client.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        # close_notify, as popproxy sends (RFC 8446 section 6.1); the peer's is not awaited
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.client.unwrap()
        for sock in (self.client, self.up):
            if sock is not None and sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
                self.loop.remove_writer(sock.fileno())
                sock.close()


def serve_sockets(loop: asyncio.AbstractEventLoop, listener: socket.socket,
                  ctx: ssl.SSLContext, upstream: int) -> None:
    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            SocketRelay(loop, ctx.wrap_socket(conn, server_side=True,
                                              do_handshake_on_connect=False), upstream)

    listener.setblocking(False)
    loop.add_reader(listener.fileno(), accept)


async def serve(port: int, cert: Path, upstream: int, io: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    ctx.num_tickets = 1  # popproxy's TLS13_SESSION_TICKETS (OpenSSL's default is 2)
    loop = asyncio.get_running_loop()
    if io == "sockets":
        listener = socket.create_server(("127.0.0.1", port), backlog=4096)
        serve_sockets(loop, listener, ctx, upstream)
    else:
        await loop.create_server(lambda: Client(upstream), "127.0.0.1", port, ssl=ctx,
                                 backlog=4096)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", type=Path, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--io", choices=("transport", "sockets"), default="transport")
    a = ap.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(a.port, a.cert, a.upstream, a.io))
    return 0


if relay is not None:

    class FloorProxy(relay.Proxy):
        """This module as a child process on popproxy's interpreter, started and stopped like
        a ``relay.Proxy``."""

        def __init__(self, port: int, pem: Path, logfile: Path, io: str) -> None:
            super().__init__(pem, port, "", logfile)
            self.io = io

        def start(self) -> None:
            cmd = [relay.PROXY_PYTHON, __file__, "--port", str(self.port), "--cert",
                   str(self.config), "--upstream", str(relay.UPSTREAM_PORT), "--io", self.io]
            with open(self.logfile, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            if not relay.wait_port(self.port):
                self.stop()
                sys.exit(f"python-floor did not listen on {self.port}; see {self.logfile}")
            relay.log(f"python-floor pid {self.pid} on 127.0.0.1:{self.port}")


if __name__ == "__main__":
    sys.exit(main())
