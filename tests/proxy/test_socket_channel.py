"""``SocketChannel``: a client socket read by the channel itself, over real loopback TCP, on
asyncio's loop and on uvloop.  Protocol input is fed whole and byte by byte."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import struct
import time

import pytest

from popproxy.proxy import socket_channel
from popproxy.proxy.channel_errors import ChannelClosed
from popproxy.proxy.read_queue import MAX_UNREAD
from popproxy.proxy.socket_channel import SocketChannel
from tests.support.sockpair import LOOPS, recv_until, run, tcp_pair, tls_client, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()

pytestmark = pytest.mark.parametrize("loop", LOOPS)


async def read_exactly(channel: SocketChannel, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await channel.read(timeout=5)
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


async def settle(condition: object, what: str) -> None:
    for _ in range(500):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never: {what}")


# ------------------------------------------------------------------ plain
def test_reads_byte_by_byte_and_whole(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        for byte in b"USER alice\r\n":
            client.send(bytes([byte]))
            await settle(lambda: channel.unread, "a byte arrives")
            assert await channel.read(timeout=1) == bytes([byte])
        client.sendall(b"PASS x\r\nSTAT\r\n")
        assert await read_exactly(channel, 14) == b"PASS x\r\nSTAT\r\n"
        assert channel.peername() == client.getsockname()
        channel.abort()
        client.close()

    run(loop, main)


def test_read_times_out_and_the_next_read_still_gets_data(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        with pytest.raises(TimeoutError):
            await channel.read(timeout=0.05)
        assert channel.awaiting_read is False
        client.sendall(b"NOOP\r\n")
        assert await channel.read(timeout=1) == b"NOOP\r\n"
        channel.abort()
        client.close()

    run(loop, main)


def test_a_failed_connection_ends_a_waiting_read_and_releases_its_timer(loop: str) -> None:
    """An idle timeout's timer (RFC 1939 s3: 600 s and more) must not keep a dead channel."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"NOOP\r\n")
        assert await channel.read(timeout=600) == b"NOOP\r\n"
        pending = asyncio.ensure_future(channel.read(timeout=600))
        await asyncio.sleep(0)
        assert channel._read_timer is not None
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST: the channel's read fails
        assert await pending == b""
        assert channel._read_timer is None and channel.is_closing()

    run(loop, main)


@pytest.mark.parametrize("tls", [False, True])
def test_a_reset_right_behind_the_last_bytes_ends_the_next_read(loop: str, tls: bool) -> None:
    """Bytes and a reset arrive together: uvloop reads them in its last callback for the
    descriptor and stops watching it (libuv's POLLERR), so the next read waited for its
    timeout, holding the session and its slot with no socket on the peer's side.  The bytes
    come first, then the end (review of h-b: repro with SO_LINGER 0)."""
    async def main() -> None:
        server, client = tcp_pair()
        channel, peer = SocketChannel(server), client
        if tls:
            peer, _ = await asyncio.gather(asyncio.to_thread(tls_client, client, CLIENT_CTX),
                                           channel.switch_to_tls(SERVER_CTX, server_side=True))
        channel._stop_reading()  # both arrive before the loop looks
        peer.sendall(b"STAT\r\n")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # (an SSLSocket's close sends no close_notify)
        await asyncio.sleep(0.05)
        channel._start_reading()
        assert await channel.read(timeout=5) == b"STAT\r\n"
        assert await channel.read(timeout=5) == b""  # not TimeoutError
        channel.abort()

    run(loop, main)


def test_peer_fin_ends_reading_but_every_answer_still_goes_out(loop: str) -> None:
    """Half-close: pipelined commands then FIN still get all their answers."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"NOOP\r\nNOOP\r\nQUIT\r\n")
        client.shutdown(socket.SHUT_WR)
        assert await read_exactly(channel, 18) == b"NOOP\r\nNOOP\r\nQUIT\r\n"
        assert await channel.read(timeout=1) == b""
        for _ in range(3):
            channel.write(b"+OK\r\n")
        await channel.drain()
        channel.close()
        assert await asyncio.to_thread(recv_until, client, b"never") == b"+OK\r\n" * 3
        client.close()

    run(loop, main)


def test_small_writes_go_out_together_at_the_end_of_the_loop_step(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        channel.write(b"+OK one\r\n")
        channel.write(b"+OK two\r\n")
        client.setblocking(False)
        with pytest.raises(BlockingIOError):  # nothing sent yet: coalesced
            client.recv(100)
        await asyncio.sleep(0.01)
        assert client.recv(100) == b"+OK one\r\n+OK two\r\n"
        channel.abort()
        client.close()

    run(loop, main)


def test_writer_pauses_while_the_peer_does_not_read_and_drain_waits(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        payload = bytes(range(256)) * 4096 * 8 + b"<end>"  # 8 MiB: more than the kernel holds
        channel.write(payload)
        assert channel.write_paused
        drained = asyncio.ensure_future(channel.drain())
        await asyncio.sleep(0.05)
        assert not drained.done()
        received = asyncio.to_thread(recv_until, client, b"<end>")
        assert await received == payload
        await drained
        assert not channel.write_paused
        channel.abort()
        client.close()

    run(loop, main)


def test_reading_stops_past_max_unread_and_resumes_once_read(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        sender = asyncio.ensure_future(asyncio.to_thread(client.sendall, b"x" * 3 * MAX_UNREAD))
        await settle(lambda: channel.unread > MAX_UNREAD, "the unread limit is passed")
        await asyncio.sleep(0.05)
        assert channel._reading is False and channel.unread < MAX_UNREAD + 256 * 1024
        total = 0
        while total < 3 * MAX_UNREAD:
            total += len(await channel.read(timeout=5))
        await sender
        channel.abort()
        client.close()

    run(loop, main)


def test_abort_and_writes_after_close(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"QUIT\r\n")
        await channel.read(timeout=1)
        client.close()
        channel.close()
        assert channel.is_closing()
        channel.write(b"dropped")
        assert await channel.read() == b""
        with pytest.raises(ChannelClosed):
            await channel.drain()
        assert channel.peername() is None

    run(loop, main)


def _fill(channel: SocketChannel) -> None:
    """Write until the kernel takes no more: the rest waits in the channel."""
    for _ in range(4096):
        channel.write(b"x" * 16384)
        channel.flush()
        if channel._out:
            return
    raise AssertionError("the kernel took 64 MiB from a peer that does not read")


def test_a_graceful_close_gives_up_on_a_peer_that_never_reads(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: close() waited for the writer to drain, forever if the peer's window
    stays shut.  After CLOSE_TIMEOUT it aborts (and the descriptor is closed)."""
    monkeypatch.setattr(socket_channel, "CLOSE_TIMEOUT", 0.2)

    async def main() -> None:
        server, client = tcp_pair()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        channel = SocketChannel(server)
        _fill(channel)
        channel.close()
        await asyncio.sleep(0.05)
        assert channel.is_closing() and not channel._closed  # still trying
        await settle(lambda: channel._closed, "the close gives up")
        assert server.fileno() == -1 and channel._close_timer is None
        client.close()

    run(loop, main)


def test_a_graceful_close_waits_on_for_a_peer_still_reading_slowly(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of the bounded close: one fixed deadline cut a peer that steadily read the end
    of a message (a pipelined RETR, DELE, QUIT on a slow link: the deletion committed, the
    message cut).  Each period in which the peer took bytes earns another."""
    monkeypatch.setattr(socket_channel, "CLOSE_TIMEOUT", 0.3)

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connect)
            client.connect(listening.getsockname())
            server, _ = listening.accept()
        server.setblocking(False)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        channel = SocketChannel(server)
        body = b"x" * (60 * 1024) + b"\r\n.\r\n+OK bye\r\n"
        channel.write(body)
        channel.flush()
        channel.close()
        assert channel._close_timer is not None  # more than the kernel took: the close waits

        def slow_reader() -> bytes:  # about 20 KB/s: 3 s for the body, 10 close periods
            client.settimeout(5)
            got = b""
            while chunk := client.recv(2048):
                got += chunk
                time.sleep(0.1)
            return got

        assert await asyncio.to_thread(slow_reader) == body
        assert channel._closed and channel._close_timer is None
        client.close()

    run(loop, main)


def test_a_graceful_close_that_completes_leaves_no_timer(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        channel.write(b"x" * (1 << 20))  # more than the kernel takes at once
        channel.close()
        received = await asyncio.to_thread(recv_until, client, b"\0")  # until the FIN
        assert len(received) == 1 << 20
        assert channel._closed and channel._close_timer is None
        client.close()

    run(loop, main)


# ------------------------------------------------------------------ STLS
def test_switch_to_tls_refuses_unread_plaintext(loop: str) -> None:
    """CVE-2011-0411: a command pipelined behind STLS must never run inside TLS."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"STLS\r\nUSER evil\r\n")
        await settle(lambda: channel.unread == 17, "both lines arrive")
        with pytest.raises(RuntimeError):
            channel.switch_to_tls(SERVER_CTX, server_side=True)
        assert not channel.tls_active
        channel.abort()
        client.close()

    run(loop, main)


def test_plaintext_in_the_kernel_at_the_switch_is_read_as_tls(loop: str) -> None:
    """Bytes that arrive after the switch are never plaintext: OpenSSL refuses them."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"STLS\r\n")
        assert await channel.read(timeout=1) == b"STLS\r\n"
        client.sendall(b"USER injected\r\n")  # no await: the channel has not read it
        channel.write(b"+OK begin TLS\r\n")
        handshake = channel.switch_to_tls(SERVER_CTX, server_side=True)
        with pytest.raises(ssl.SSLError):
            await handshake
        assert channel.unread == 0 and channel.is_closing()
        client.close()

    run(loop, main)


def test_stls_round_trip_then_close_notify(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        client.sendall(b"STLS\r\n")
        assert await channel.read(timeout=1) == b"STLS\r\n"
        channel.write(b"+OK begin TLS\r\n")
        handshake = channel.switch_to_tls(SERVER_CTX, server_side=True)
        assert channel.handshaking
        assert await asyncio.to_thread(recv_until, client, b"\r\n") == b"+OK begin TLS\r\n"
        tls = await asyncio.gather(asyncio.to_thread(tls_client, client, CLIENT_CTX), handshake)
        secure = tls[0]
        ssl_socket = channel.ssl_object()
        assert not channel.handshaking and ssl_socket is not None
        assert ssl_socket.version() == secure.version()
        with pytest.raises(RuntimeError, match="already active"):
            channel.switch_to_tls(SERVER_CTX, server_side=True)
        big = bytes(range(256)) * 4096 * 8 + b"<end>"  # records in slices, retried when full
        channel.write(b"+OK\r\n" + big)
        assert channel.write_paused and channel._retry is not None  # SSLWantWriteError
        got = await asyncio.to_thread(recv_until, secure, b"<end>")
        assert got == b"+OK\r\n" + big
        for byte in b"CAPA\r\n":  # a record per byte
            secure.sendall(bytes([byte]))
        assert await read_exactly(channel, 6) == b"CAPA\r\n"
        channel.close()
        secure.settimeout(5)
        assert await asyncio.to_thread(secure.recv, 10) == b""  # close_notify, not a reset
        secure.close()

    run(loop, main)


@pytest.mark.parametrize("ending", ["close_notify", "ragged"])
def test_a_tls_peer_that_leaves_is_eof_and_bytes_before_it_are_read(loop: str,
                                                                   ending: str) -> None:
    """Reads call OpenSSL's object directly (not SSLSocket.recv_into): its close_notify
    (SSLZeroReturnError) and a FIN without one (SSLEOFError, which SSLSocket suppresses as
    ragged EOF) must both read as EOF, after every byte sent before them."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        handshake = channel.start_implicit_tls()
        secure, _ = await asyncio.gather(asyncio.to_thread(tls_client, client, CLIENT_CTX),
                                         handshake)
        secure.sendall(b"QUIT\r\n")
        if ending == "close_notify":  # unwrap waits for ours: sent by close() below
            unwrapped = asyncio.ensure_future(asyncio.to_thread(secure.unwrap))
        else:
            socket.socket.shutdown(secure, socket.SHUT_WR)  # TCP FIN (SSLSocket.shutdown
            # would drop its TLS object: recv below would be raw)
        assert await read_exactly(channel, 6) == b"QUIT\r\n"
        assert await channel.read(timeout=5) == b""
        assert not channel.is_closing()  # half-close: our side stays open to answer
        channel.close()
        assert channel.is_closing()
        if ending == "close_notify":
            await unwrapped  # got ours
        # (after a ragged EOF OpenSSL 3 answers a decode_error alert, as through SSLSocket)
        secure.close()

    run(loop, main)


# ------------------------------------------------------------------ implicit TLS
def test_implicit_tls_reads_nothing_and_sends_nothing_before_it_starts(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        hello = asyncio.ensure_future(asyncio.to_thread(tls_client, client, CLIENT_CTX))
        await asyncio.sleep(0.1)  # the ClientHello waits in the kernel
        assert channel.unread == 0 and not channel._reading and not hello.done()
        await channel.start_implicit_tls()
        secure = await hello
        channel.write(b"+OK ready\r\n")
        assert await asyncio.to_thread(recv_until, secure, b"\r\n") == b"+OK ready\r\n"
        channel.abort()
        secure.close()

    run(loop, main)


def test_garbage_instead_of_a_client_hello_fails_the_handshake(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        client.sendall(b"USER alice\r\n")
        with pytest.raises(ssl.SSLError):
            await channel.start_implicit_tls()
        assert channel.is_closing() and channel.unread == 0
        client.close()

    run(loop, main)


def test_a_failed_handshake_is_freed_without_the_cyclic_gc(loop: str) -> None:
    """Regression (review of h-a): the stored error linked the channel to the frames that
    caught it, so every failed handshake kept its channel and OpenSSL state until the cyclic
    GC ran."""
    def alive() -> int:
        return sum(1 for o in gc.get_objects() if type(o) in (SocketChannel, ssl.SSLSocket))

    async def fail_one() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        client.sendall(b"USER alice\r\n")
        failed = False
        try:  # not pytest.raises: its ExceptionInfo would keep this frame, and the channel
            await channel.start_implicit_tls()
        except ssl.SSLError:
            failed = True
        assert failed
        client.close()

    async def main() -> None:
        gc.collect()
        gc.disable()
        try:
            before = alive()
            for _ in range(5):
                await fail_one()
            await asyncio.sleep(0)  # callbacks already queued for them run
            assert alive() == before, "kept alive by a reference cycle"
        finally:
            gc.enable()

    run(loop, main)


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # wrap_socket's own SSLSocket, freed
def test_a_connection_reset_before_tls_starts_fails_the_handshake_future(loop: str) -> None:
    """Regression (review of h-a): wrap_socket raised ConnectionResetError synchronously on a
    reset socket, with ``handshaking`` left True and the descriptor held by an orphan."""
    async def main() -> None:
        server, client = tcp_pair()
        fd = server.fileno()
        channel = SocketChannel(server, SERVER_CTX)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
        await asyncio.sleep(0.05)
        handshake = channel.start_implicit_tls()
        with pytest.raises(ChannelClosed):
            await handshake
        assert not channel.handshaking and channel.is_closing()
        with pytest.raises(OSError):
            os.fstat(fd)  # closed now, not whenever a collection finds it

    run(loop, main)


@pytest.mark.parametrize("how", ["fin", "close"])
def test_a_lost_or_closed_connection_fails_the_handshake(loop: str, how: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX)
        handshake = channel.start_implicit_tls()
        if how == "fin":
            client.shutdown(socket.SHUT_WR)
        else:
            channel.close()
        with pytest.raises((ssl.SSLError, ChannelClosed)):
            await handshake
        assert channel.is_closing()
        if how == "close":  # nothing to close_notify before the handshake: a bare FIN
            assert await asyncio.to_thread(client.recv, 100) == b""
        client.close()

    run(loop, main)


@pytest.mark.parametrize("tls", [False, True])
def test_a_resting_channel_is_not_watched_and_reads_what_came_meanwhile(loop: str,
                                                                         tls: bool) -> None:
    """``rest``: an idle session's upstream lets go of its poll handle (memory per idle
    session); the next read watches the socket again and gets what waited in the kernel."""
    async def main() -> None:
        server, client = tcp_pair()
        channel, peer = SocketChannel(server), client
        if tls:
            peer, _ = await asyncio.gather(asyncio.to_thread(tls_client, client, CLIENT_CTX),
                                           channel.switch_to_tls(SERVER_CTX, server_side=True))
        reading = asyncio.ensure_future(channel.read(timeout=5))
        await asyncio.sleep(0)
        channel.rest()  # a read waits: no rest
        assert channel._reading and not reading.done()
        peer.sendall(b"+OK\r\n")
        assert await reading == b"+OK\r\n"
        channel.rest()
        assert not channel._reading
        for byte in b"+OK\r\n":  # whole records (or segments) arrive while nobody watches
            peer.sendall(bytes([byte]))
        await asyncio.sleep(0.05)
        assert channel.unread == 0
        assert await read_exactly(channel, 5) == b"+OK\r\n"
        assert channel._reading  # watched again while a read waits
        channel.abort()
        peer.close()

    run(loop, main)
