"""``SocketWriter`` (the write side of ``SocketChannel``): water marks, the TLS retry of the
exact slice, partial plain sends, and a close that waits for what is queued."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme

from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.socket_writer import COALESCE_LIMIT, HIGH_WATER, LOW_WATER
from tests.support.sockpair import LOOPS, recv_until, run, tcp_pair, tls_client, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()
pytestmark = pytest.mark.parametrize("loop", LOOPS)


def _small_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


def test_a_write_of_the_coalesce_limit_goes_out_at_once(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        channel.write(b"x" * COALESCE_LIMIT)
        client.setblocking(False)
        assert len(client.recv(2 * COALESCE_LIMIT)) > 0  # sent in this step, not the next
        channel.abort()
        client.close()

    run(loop, main)


def test_partial_plain_sends_keep_the_rest_in_order_and_close_waits_for_it(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        _small_buffers(server)
        channel = SocketChannel(server)
        parts = [bytes([65 + i % 26]) * 50_000 for i in range(40)]
        for part in parts:
            channel.write(part)
        assert channel.write_paused and channel._out_size > HIGH_WATER
        channel.close()  # graceful: everything queued goes first
        data = await asyncio.to_thread(recv_until, client, b"never")
        assert data == b"".join(parts)
        client.close()

    run(loop, main)


def test_tls_retries_the_same_slice_and_resumes_below_the_low_water_mark(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        _small_buffers(server)
        channel = SocketChannel(server, SERVER_CTX)
        handshake = channel.start_implicit_tls()
        secure, _ = await asyncio.gather(asyncio.to_thread(tls_client, client, CLIENT_CTX),
                                         handshake)
        body = b"".join(b"%08d\r\n" % i for i in range(200_000)) + b"<end>"
        channel.write(body)
        assert channel._retry is not None and channel.write_paused
        drained = asyncio.ensure_future(channel.drain())
        got = await asyncio.to_thread(recv_until, secure, b"<end>")
        assert got == body  # every record once, in order: the retried slice was the same
        await drained
        assert not channel.write_paused and channel._out_size <= LOW_WATER
        channel.abort()
        secure.close()

    run(loop, main)


def _big_flight_contexts(intermediates: int) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server whose handshake flight (a chain of RSA intermediates) is far larger than the
    send and receive buffers below."""
    root = trustme.CA(key_type=trustme.KeyType.RSA, path_length=intermediates + 1)
    ca = root
    for _ in range(intermediates):
        ca = ca.create_child_ca(key_type=trustme.KeyType.RSA)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", key_type=trustme.KeyType.RSA).configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    root.configure_trust(client_ctx)
    return server_ctx, client_ctx


def _client_handshake(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                      outgoing: ssl.MemoryBIO) -> None:
    """Blocking: finish a client handshake over memory BIOs (the ClientHello went already)."""
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
            continue
        sock.sendall(outgoing.read())
        return


# 6 intermediates: the flight goes in two writable rounds; 24 (~30 KB): three or more, where a
# retry raises SSLWantWriteError again (regression, review: the writer was dropped then, and
# with the reader off nothing was left to finish the handshake).
@pytest.mark.parametrize("intermediates", [6, 24], ids=["two-rounds", "three-rounds-or-more"])
def test_a_handshake_flight_that_does_not_fit_waits_for_writability(
        loop: str, intermediates: int) -> None:
    """SSLWantWriteError in the handshake: the reader stops (no spinning), the writer resumes
    it, and the handshake completes."""
    server_ctx, client_ctx = _big_flight_contexts(intermediates)

    async def main() -> None:
        with socket.create_server(("127.0.0.1", 0)) as listening:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
            client.connect(listening.getsockname())
            server, _ = listening.accept()
        server.setblocking(False)
        _small_buffers(server)
        client.settimeout(5)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        client.sendall(outgoing.read())  # the ClientHello; nothing read back yet
        channel = SocketChannel(server, server_ctx)
        handshake = channel.start_implicit_tls()
        await asyncio.sleep(0.05)
        assert channel._read_wants_write and not channel._reading and channel._writing
        await asyncio.wait_for(asyncio.gather(
            asyncio.to_thread(_client_handshake, client, tls, incoming, outgoing), handshake), 10)
        assert channel._reading and not channel.handshaking
        channel.abort()
        client.close()

    run(loop, main)
