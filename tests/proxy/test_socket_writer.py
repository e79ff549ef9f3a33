"""``SocketWriter`` (the write side of ``SocketChannel``): water marks, the TLS retry of the
exact slice, partial plain sends, and a close that waits for what is queued."""

from __future__ import annotations

import asyncio
import socket

import pytest

from popproxy.proxy.socket_channel import SocketChannel
from popproxy.proxy.socket_writer import COALESCE_LIMIT, HIGH_WATER, LOW_WATER
from tests.support.memtransport import tls_contexts
from tests.support.sockpair import LOOPS, recv_until, run, tcp_pair, tls_client

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
