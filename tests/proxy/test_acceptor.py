"""The server's accept loop: sockets as ``create_server`` made them, each accepted connection
non-blocking with TCP_NODELAY, a pause (not a spin) when descriptors run out, and a clean stop."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

from popproxy.proxy import acceptor
from popproxy.proxy.acceptor import Acceptor, listening_sockets
from popproxy.proxy.socket_channel import SocketChannel
from tests.support.ports import accept_queue_sizes
from tests.support.sockpair import LOOPS, run

on_each_loop = pytest.mark.parametrize("loop", LOOPS)


@on_each_loop
def test_accepts_every_queued_connection_non_blocking_without_nagle(loop: str) -> None:
    async def main() -> None:
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        accepted: list[socket.socket] = []
        server = Acceptor(sock, 16, accepted.append)
        port = sock.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for _ in range(200):
            if len(accepted) == 5:
                break
            await asyncio.sleep(0.005)
        assert len(accepted) == 5
        for conn, client in zip(accepted, clients, strict=True):
            assert conn.gettimeout() == 0.0
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            # Made from the descriptor and the listening socket's kind (not socket.accept()):
            # the same socket as accept() made.
            assert (conn.family, conn.type, conn.proto) == (sock.family, sock.type, sock.proto)
            assert conn.getpeername() == client.getsockname()
            conn.close()
        server.close()
        assert sock.fileno() == -1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        for client in clients:
            client.close()

    run(loop, main)


@on_each_loop
def test_a_failing_hand_over_closes_that_connection_and_accepts_the_rest(
        loop: str, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        accepted: list[socket.socket] = []
        refused: list[socket.socket] = []

        def on_accept(conn: socket.socket) -> None:
            if not refused:
                refused.append(conn)
                raise RuntimeError("a bug in the session start")
            accepted.append(conn)

        server = Acceptor(sock, 16, on_accept)
        clients = [socket.create_connection(sock.getsockname()) for _ in range(3)]
        for _ in range(200):
            if len(accepted) == 2:
                break
            await asyncio.sleep(0.005)
        assert len(accepted) == 2 and len(refused) == 1
        assert refused[0].fileno() == -1  # closed at once, not left to the GC
        assert "handing over a connection" in caplog.text
        assert "a bug in the session start" in caplog.text  # the traceback is logged
        for conn in accepted:
            conn.close()
        server.close()
        for client in clients:
            client.close()

    run(loop, main)


@on_each_loop
def test_a_hand_over_failing_after_its_channel_watches_the_socket_unwatches_it_first(
        loop: str) -> None:
    """The channel is made (``add_reader``), then ``on_accept`` fails: closing the socket
    under the loop's watch aborted uvloop's process and, on asyncio's loop, left a stale
    selector entry that the next connection's descriptor (the same number) never got past
    (review of the hand-over)."""
    async def main() -> None:
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        channels: list[SocketChannel] = []

        def on_accept(conn: socket.socket) -> None:
            channel = SocketChannel(conn)  # watches the descriptor
            if not channels:
                channels.append(channel)
                raise RuntimeError("a bug after the channel was made")
            channels.append(channel)

        server = Acceptor(sock, 16, on_accept)
        first = socket.create_connection(sock.getsockname())
        while not channels:
            await asyncio.sleep(0.005)
        first.close()
        second = socket.create_connection(sock.getsockname())
        while len(channels) < 2:
            await asyncio.sleep(0.005)
        second.sendall(b"CAPA\r\n")
        assert await channels[1].read(timeout=2) == b"CAPA\r\n"
        channels[1].abort()
        second.close()
        server.close()

    run(loop, main)


class _OutOfFiles(socket.socket):
    """A listening socket whose first accept fails with EMFILE."""

    failures = 0

    def _accept(self) -> tuple[int, Any]:  # what Acceptor calls (not accept(): issue 18)
        if _OutOfFiles.failures == 0:
            _OutOfFiles.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super()._accept()  # type: ignore[misc,no-any-return]


@on_each_loop
def test_out_of_descriptors_pauses_accepting_then_resumes(loop: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptor, "ACCEPT_PAUSE", 0.2)
    _OutOfFiles.failures = 0

    async def main() -> None:
        (plain,) = listening_sockets("127.0.0.1", 0, 16)
        sock = _OutOfFiles(plain.family, plain.type, plain.proto, fileno=plain.detach())
        accepted: list[socket.socket] = []
        server = Acceptor(sock, 16, accepted.append)
        client = socket.create_connection(sock.getsockname())
        await asyncio.sleep(0.1)
        assert _OutOfFiles.failures == 1 and not accepted  # paused, not spinning
        await asyncio.sleep(0.3)
        assert len(accepted) == 1
        accepted[0].close()
        client.close()
        server.close()

    run(loop, main)


def test_a_port_in_use_names_the_setting_and_the_address() -> None:
    """Regression: "cannot start: [Errno 98] Address already in use" did not say which of the
    listeners (or the metrics port) it was."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as failed:
            listening_sockets("127.0.0.1", port, 16, "listeners pop3s")
    assert failed.value.errno == errno.EADDRINUSE
    assert str(failed.value) == (f"[Errno {errno.EADDRINUSE}] listeners pop3s: 127.0.0.1:{port}: "
                                 "Address already in use")


def test_resize_changes_the_queue_and_a_failure_only_logs(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """A reload's ``limits.listen_backlog``: listen(2) again resizes the queue; a socket that
    cannot (closed under it) keeps the rest of the reload going (a warning, no exception)."""
    async def main() -> None:
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        server = Acceptor(sock, 16, lambda conn: conn.close())
        port = sock.getsockname()[1]
        assert accept_queue_sizes(port) == [16]
        server.resize(48)
        assert accept_queue_sizes(port) == [48]
        server.close()
        with caplog.at_level("WARNING"):
            server.resize(64)
        assert any("keeps its size" in r.getMessage() for r in caplog.records)

    run("asyncio", main)


@on_each_loop
def test_listening_sockets_binds_every_address_of_the_host(loop: str) -> None:
    async def main() -> None:
        made = listening_sockets("localhost", 0, 8)
        try:
            ports = {sock.getsockname()[1] for sock in made}
            assert len(ports) == 1 and made
            assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) for sock in made)
        finally:
            for sock in made:
                sock.close()

    run(loop, main)


def _fake_addresses(*families: socket.AddressFamily) -> list[Any]:
    """getaddrinfo's answer for a host with these addresses, in this order."""
    address = {socket.AF_INET: ("127.0.0.1", 0), socket.AF_INET6: ("::1", 0, 0, 0)}
    return [(f, socket.SOCK_STREAM, 6, "", address[f]) for f in families]


def test_a_host_without_ipv6_listens_on_what_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review of h-a): an IPv6 address of the listener's host on a machine
    without IPv6 stopped the proxy from starting; create_server skipped it."""
    real_socket = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args)

    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda *a, **k: _fake_addresses(socket.AF_INET6, socket.AF_INET))
    monkeypatch.setattr(socket, "socket", no_ipv6)
    made = listening_sockets("", 0, 8)
    try:
        assert [sock.family for sock in made] == [socket.AF_INET]
    finally:
        for sock in made:
            sock.close()
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda *a, **k: _fake_addresses(socket.AF_INET6))
    with pytest.raises(OSError, match="no address"):
        listening_sockets("", 0, 8)


def test_an_address_listed_twice_is_bound_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review of h-a): a duplicated hosts entry made the second bind fail with
    EADDRINUSE; create_server took each address once."""
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda *a, **k: _fake_addresses(socket.AF_INET, socket.AF_INET))
    made = listening_sockets("localhost", 0, 8)
    try:
        assert len(made) == 1
    finally:
        for sock in made:
            sock.close()
