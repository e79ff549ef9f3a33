"""``upstream_socket.open_channel``: upstream connections on ``SocketChannel`` over real loopback
TCP, on asyncio's loop and on uvloop: every address in order, TCP_NODELAY, a cancelled connect
closes its socket, and the upstream side's STLS, TLS verification, half-close and back-pressure
rules hold on the channel that reads its own socket."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from popproxy.policy import Upstream
from popproxy.pop3.events import Command
from popproxy.proxy import upstream_socket
from popproxy.proxy.read_queue import MAX_UNREAD, READ_BUFFER_SIZE
from popproxy.proxy.socket_channel import BULK_READ, SocketChannel
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError, UpstreamFailure
from popproxy.proxy.upstream_socket import AddrInfo, connect_one, open_channel
from tests.helpers import make_config
from tests.support.sockpair import LOOPS, recv_until, run, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()

pytestmark = pytest.mark.parametrize("loop", LOOPS)

Script = Callable[[socket.socket], None]


@contextmanager
def serving(script: Script) -> Iterator[int]:
    """A blocking one-connection server in a thread running ``script``; yields its port."""
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]

    def serve() -> None:
        conn, _ = listening.accept()
        conn.settimeout(5)
        # OSError: the proxy dropped the connection, which some tests expect.
        with conn, contextlib.suppress(OSError):
            script(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        thread.join(10)
        listening.close()


def refused_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def settings(port: int, mode: str = "plain", **extra: object) -> Upstream:
    return make_config(110).upstream.model_copy(
        update={"host": "127.0.0.1", "port": port, "mode": mode, **extra})


def test_connects_with_nodelay_and_half_close_keeps_our_side_open(loop: str) -> None:
    got = bytearray()

    def script(conn: socket.socket) -> None:
        conn.sendall(b"+OK ready\r\n")
        conn.shutdown(socket.SHUT_WR)  # FIN: the proxy still writes (QUIT and its answer)
        got.extend(recv_until(conn, b"QUIT\r\n"))

    async def main() -> None:
        with serving(script) as port:
            threads = len(os.listdir("/proc/self/task"))
            channel = await open_channel("127.0.0.1", port)
            # No resolver thread pool started for a literal (uvloop's sock_connect would).
            assert len(os.listdir("/proc/self/task")) == threads
            assert isinstance(channel, SocketChannel)
            sock = channel._sock
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert await channel.read(timeout=5) == b"+OK ready\r\n"
            assert await channel.read(timeout=5) == b""  # EOF, not an error
            channel.write(b"QUIT\r\n")
            channel.close()
            await asyncio.sleep(0.05)
        assert bytes(got) == b"QUIT\r\n"

    run(loop, main)


def test_every_address_is_tried_in_order_until_one_connects(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = refused_port()

    def script(conn: socket.socket) -> None:
        conn.sendall(b"+OK second\r\n")

    async def main() -> None:
        with serving(script) as port:
            infos = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", dead)),
                     (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            monkeypatch.setattr(upstream_socket, "resolve", fake_resolve(infos))
            channel = await open_channel("upstream.example", 110)
            assert await channel.read(timeout=5) == b"+OK second\r\n"
            channel.abort()

    run(loop, main)


def fake_resolve(infos: Sequence[AddrInfo]) -> Callable[..., Any]:
    async def resolve(loop: object, host: str, port: int) -> Sequence[AddrInfo]:
        return infos

    return resolve


def test_every_address_refused_raises_for_the_connect_failure(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        one = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", refused_port()))
        monkeypatch.setattr(upstream_socket, "resolve", fake_resolve([one, one]))
        with pytest.raises(ConnectionRefusedError):
            await open_channel("upstream.example", 110)
        monkeypatch.setattr(upstream_socket, "resolve", fake_resolve([]))
        with pytest.raises(OSError, match="no addresses"):
            await open_channel("upstream.example", 110)
        monkeypatch.undo()
        # What the session reports: -ERR [SYS/TEMP], reason "connect" (metrics, audit).
        with pytest.raises(UpstreamError) as caught:
            await UpstreamConnection.open(settings(refused_port()), None)
        assert caught.value.reason is UpstreamFailure.CONNECT

    run(loop, main)


def test_a_cancelled_connect_closes_its_socket(loop: str, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    watched: list[int] = []
    unwatched: list[int] = []
    # A loopback connect is done when connect(2) returns: seen as still in progress here, as a
    # remote upstream's would be, it is waited for.
    monkeypatch.setattr(upstream_socket, "connected", lambda sock: False)

    class Stalled:  # the connect's completion is never reported: the timeout cancels it
        def create_future(self) -> asyncio.Future[None]:
            return asyncio.get_running_loop().create_future()

        def add_writer(self, fd: int, *args: object) -> None:
            watched.append(fd)

        def remove_writer(self, fd: int) -> None:
            unwatched.append(fd)

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await connect_one(Stalled(), socket.AF_INET,  # type: ignore[arg-type]
                                      socket.SOCK_STREAM, 6, listening.getsockname())
            assert watched and unwatched == watched  # unwatched, then closed:
            with pytest.raises(OSError):
                os.fstat(watched[0])

    run(loop, main)


def test_stls_upstream_refuses_plaintext_behind_its_ok(loop: str) -> None:
    """RFC 2595 section 4 from the client side: an answer injected after the STLS +OK must
    not be read as if TLS protected it."""

    def script(conn: socket.socket) -> None:
        conn.sendall(b"+OK ready\r\n")
        recv_until(conn, b"STLS\r\n")
        conn.sendall(b"+OK begin TLS\r\n+OK logged in (injected)\r\n")
        recv_until(conn, b"never")

    async def main() -> None:
        with serving(script) as port, pytest.raises(UpstreamError) as caught:
            await UpstreamConnection.open(settings(port, "starttls"), CLIENT_CTX)
        assert caught.value.reason is UpstreamFailure.STLS

    run(loop, main)


@pytest.mark.parametrize("mode", ["tls", "starttls"])
@pytest.mark.parametrize("name", ["localhost", "wrong.example"])
def test_upstream_tls_on_the_socket_verifies_the_server_name(loop: str, mode: str,
                                                             name: str) -> None:
    commands = bytearray()

    def script(conn: socket.socket) -> None:
        if mode == "starttls":
            conn.sendall(b"+OK ready\r\n")
            recv_until(conn, b"STLS\r\n")
            conn.sendall(b"+OK begin TLS\r\n")
        tls = SERVER_CTX.wrap_socket(conn, server_side=True)
        if mode == "tls":
            tls.sendall(b"+OK ready\r\n")
        data = recv_until(tls, b"QUIT\r\n")
        commands.extend(data)
        tls.sendall(b"+OK bye\r\n")

    async def main() -> None:
        with serving(script) as port:
            upstream = settings(port, mode, server_name=name)
            if name != "localhost":
                with pytest.raises(UpstreamError) as caught:
                    await UpstreamConnection.open(upstream, CLIENT_CTX)
                assert caught.value.reason is UpstreamFailure.TLS_VERIFY
                return
            conn = await UpstreamConnection.open(upstream, CLIENT_CTX)
            assert (await conn.status(Command("QUIT"))).ok
            conn.close()
        assert bytes(commands) == b"QUIT\r\n"

    run(loop, main)


def test_reading_stops_while_nobody_takes_the_relayed_bytes(loop: str) -> None:
    """A slow client stops the relay, which stops reading: at most MAX_UNREAD (plus one read)
    waits in the upstream channel, the rest stays in the kernel and with the upstream."""
    total = 8 * MAX_UNREAD
    payload = b"x" * total

    def script(conn: socket.socket) -> None:
        conn.sendall(payload)

    async def main() -> None:
        with serving(script) as port:
            channel = await open_channel("127.0.0.1", port)
            await asyncio.sleep(0.3)
            assert MAX_UNREAD < channel.unread <= MAX_UNREAD + READ_BUFFER_SIZE
            got = 0
            while got < total:
                chunk = await channel.read(timeout=5)
                assert chunk
                got += len(chunk)
            assert got == total
            channel.abort()

    run(loop, main)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_an_address_literal_is_not_resolved_in_the_executor(loop: str, host: str) -> None:
    """The executor's threads stayed with every worker (the idle bench: 8 threads more)."""
    asked: list[str] = []

    class Resolver:
        async def getaddrinfo(self, name: str, port: int, **kwargs: Any) -> list[AddrInfo]:
            asked.append(name)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", port))]

    async def main() -> None:
        literal = await upstream_socket.resolve(Resolver(), host, 110)  # type: ignore[arg-type]
        assert [info[4][:2] for info in literal] == [(host, 110)]
        assert asked == []
        named = await upstream_socket.resolve(Resolver(), "pop.example", 110)  # type: ignore[arg-type]
        assert [info[4] for info in named] == [("192.0.2.1", 110)] and asked == ["pop.example"]

    run(loop, main)


def test_a_literal_is_parsed_once_and_a_name_is_resolved_every_time(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per login, socket.getaddrinfo's wrapper cost ~20 Python calls (issue 18): a literal's
    addresses are kept; a name's are not (DNS answers change), only that it is a name."""
    parsed: list[str] = []
    asked: list[str] = []
    real = socket.getaddrinfo

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(host)
        return real(host, *args, **kwargs)

    class Resolver:
        async def getaddrinfo(self, name: str, port: int, **kwargs: Any) -> list[AddrInfo]:
            asked.append(name)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (f"192.0.2.{len(asked)}", port))]

    monkeypatch.setattr(upstream_socket, "_literals", {})
    monkeypatch.setattr(socket, "getaddrinfo", counting)

    async def main() -> None:
        for _ in range(3):
            first = await upstream_socket.resolve(Resolver(), "127.0.0.1", 110)  # type: ignore[arg-type]
            assert [info[4] for info in first] == [("127.0.0.1", 110)]
        other_port = await upstream_socket.resolve(Resolver(), "127.0.0.1", 995)  # type: ignore[arg-type]
        assert [info[4] for info in other_port] == [("127.0.0.1", 995)]
        named = [await upstream_socket.resolve(Resolver(), "pop.example", 110)  # type: ignore[arg-type]
                 for _ in range(2)]
        assert [n[0][4][0] for n in named] == ["192.0.2.1", "192.0.2.2"]
        assert parsed == ["127.0.0.1", "127.0.0.1", "pop.example"]
        assert asked == ["pop.example", "pop.example"]

    run(loop, main)


def test_the_literal_memo_is_bounded(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_socket, "_literals", {})
    monkeypatch.setattr(upstream_socket, "MAX_LITERALS", 3)

    async def main() -> None:
        for port in range(100, 110):
            await upstream_socket.resolve(asyncio.get_running_loop(), "127.0.0.1", port)
            assert 1 <= len(upstream_socket._literals) <= 3

    run(loop, main)


def test_a_bulk_transfer_is_read_several_times_per_wake_up(loop: str) -> None:
    """One read per readiness doubled uvloop's loop iterations on a RETR relay (+25 % CPU per
    MB); a read of BULK_READ or more is followed by another, up to BULK_READS."""
    size = 3 * READ_BUFFER_SIZE

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            sender = socket.create_connection(listening.getsockname())
            server, _ = listening.accept()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * size)
        server.setblocking(False)
        channel = SocketChannel(server)
        channel._stop_reading()  # the test plays the loop's wake-up below
        threading.Thread(target=sender.sendall, args=(b"x" * size,), daemon=True).start()
        for _ in range(500):
            with contextlib.suppress(BlockingIOError):
                if len(server.recv(size, socket.MSG_PEEK)) >= size:
                    break
            await asyncio.sleep(0.01)
        channel._reading = True  # as if watched: one wake-up
        channel._read_plain()
        assert channel.unread > READ_BUFFER_SIZE  # more than one read in it
        channel.abort()
        sender.close()

    run(loop, main)


def test_a_tls_bulk_transfer_takes_many_records_per_wake_up(loop: str) -> None:
    """SSL_read returns one record (16 KiB) and ``pending()`` is 0 after it: stopping there
    meant one wake-up per record on a TLS upstream's RETR (+10-30 % CPU per MB, review of h-e).
    Full records are followed by more, up to BULK_RECORDS: with 4 full records waiting in the
    socket (what fits in a fresh loopback receive window, ~94 KiB), one wake-up takes them all.
    The test plays that wake-up once the records are there, as the plain one does: counting the
    loop's wake-ups over a long transfer depended on how fast the sender ran on a busy box."""
    size = 4 * BULK_READ
    go, done = threading.Event(), threading.Event()

    def send_body(conn: socket.socket) -> None:
        with SERVER_CTX.wrap_socket(conn, server_side=True) as tls:
            go.wait(10)
            tls.sendall(b"x" * size)  # one 16 KiB record per BULK_READ
            done.wait(10)

    async def main() -> None:
        with serving(send_body) as port:
            channel = await open_channel("127.0.0.1", port)
            await channel.start_tls(CLIENT_CTX, server_side=False, server_hostname="localhost")
            channel._stop_reading()  # the test plays the loop's wake-up below
            go.set()
            for _ in range(500):  # every record's bytes (plus its framing) in the socket
                with contextlib.suppress(BlockingIOError):
                    if len(channel._sock.recv(2 * size, socket.MSG_PEEK)) > size:
                        break
                await asyncio.sleep(0.01)
            channel._reading = True  # as if watched: one wake-up
            channel._read_tls()
            taken = channel.unread
            channel.abort()
            done.set()
        assert taken == size, f"{taken} of {size} bytes in one wake-up"

    run(loop, main, timeout=60)


def test_a_connect_done_at_once_is_not_waited_for(loop: str) -> None:
    class NoWaiting:  # a loopback connect completes inside connect(2): no writability wait
        def create_future(self) -> asyncio.Future[None]:
            raise AssertionError("waited for a connect that was done")

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            sock = await connect_one(NoWaiting(), socket.AF_INET,  # type: ignore[arg-type]
                                     socket.SOCK_STREAM, 6, listening.getsockname())
            try:  # (a RawSocket: no context manager)
                assert sock.getpeername() == listening.getsockname()
            finally:
                sock.close()
            dead = refused_port()
            with pytest.raises(ConnectionRefusedError):  # not connected: waited for, refused
                await connect_one(asyncio.get_running_loop(), socket.AF_INET,
                                  socket.SOCK_STREAM, 6, ("127.0.0.1", dead))

    run(loop, main)
