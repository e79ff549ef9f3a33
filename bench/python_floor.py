"""The least a Python TLS relay can spend per session, for bench/peers.py (``--products floor``).

Issue 18 asks popproxy for at most 1.35x haproxy's CPU per TLS session.  Before asking how much
of popproxy's work per login can go, this measures what cannot: a relay that terminates TLS
with the lab's certificate on uvloop's loop (its TLS is Cython over OpenSSL's memory BIOs),
connects each client to Dovecot and copies bytes both ways, with no POP3 parsing, policy,
lockout, scanning, metrics or logs.  It is not a product and has no limits; it is the floor
any proxy written in Python with asyncio sits on, run on the same interpreter as popproxy
(``relay.PROXY_PYTHON``).

  python_floor.py --port N --cert server.pem --upstream 11110      # serve until SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import signal
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


async def serve(port: int, cert: Path, upstream: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream), "127.0.0.1", port, ssl=ctx,
                                      backlog=1024)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", type=Path, required=True)
    ap.add_argument("--upstream", type=int, required=True)
    a = ap.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(a.port, a.cert, a.upstream))
    return 0


if relay is not None:

    class FloorProxy(relay.Proxy):
        """This module as a child process on popproxy's interpreter, started and stopped like
        a ``relay.Proxy``."""

        def __init__(self, port: int, pem: Path, logfile: Path) -> None:
            super().__init__(pem, port, "", logfile)

        def start(self) -> None:
            cmd = [relay.PROXY_PYTHON, __file__, "--port", str(self.port), "--cert",
                   str(self.config), "--upstream", str(relay.UPSTREAM_PORT)]
            with open(self.logfile, "ab") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            if not relay.wait_port(self.port):
                self.stop()
                sys.exit(f"python-floor did not listen on {self.port}; see {self.logfile}")
            relay.log(f"python-floor pid {self.pid} on 127.0.0.1:{self.port}")


if __name__ == "__main__":
    sys.exit(main())
