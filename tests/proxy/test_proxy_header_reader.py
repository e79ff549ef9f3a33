"""``proxy_header_reader``: a ``SocketChannel``'s PROXY header (HAProxy spec section 2), over
real loopback TCP on both loops; the header whole and byte by byte, then TLS or commands."""

from __future__ import annotations

import asyncio
import socket

import pytest

from popproxy.proxy.socket_channel import SocketChannel
from popproxy.wire.proxyproto import ProxyProtocolError
from tests.support.sockpair import LOOPS, run, tcp_pair, tls_client, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()
V1_HEADER = b"PROXY TCP4 192.0.2.7 198.51.100.2 40000 995\r\n"

pytestmark = pytest.mark.parametrize("loop", LOOPS)


@pytest.mark.parametrize("dribble", [False, True])
def test_proxy_header_then_tls_leaves_the_client_hello_to_openssl(loop: str,
                                                                   dribble: bool) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, SERVER_CTX, proxy_header=True)
        assert channel.proxy_header is not None
        if dribble:
            for byte in V1_HEADER:
                client.send(bytes([byte]))
                await asyncio.sleep(0.001)
        else:
            client.sendall(V1_HEADER)
        hello = asyncio.ensure_future(asyncio.to_thread(tls_client, client, CLIENT_CTX))
        header = await channel.proxy_header
        assert header.source is not None and str(header.source[0]) == "192.0.2.7"
        await channel.start_implicit_tls()  # the ClientHello was still in the kernel
        secure = await hello
        secure.sendall(b"CAPA\r\n")
        assert await channel.read(timeout=5) == b"CAPA\r\n"
        channel.abort()
        secure.close()

    run(loop, main)


@pytest.mark.parametrize("dribble", [False, True])
def test_proxy_header_then_the_commands_behind_it(loop: str, dribble: bool) -> None:
    """In one segment, or a byte at a time: the header's bytes only are the header's."""
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, proxy_header=True)
        assert channel.proxy_header is not None
        if dribble:
            for byte in V1_HEADER + b"CAPA\r\n":
                client.send(bytes([byte]))
                await asyncio.sleep(0.001)
        else:
            client.sendall(V1_HEADER + b"CAPA\r\n")
        header = await channel.proxy_header
        assert header.source is not None and str(header.source[0]) == "192.0.2.7"
        received = b""
        while len(received) < 6:
            chunk = await channel.read(timeout=5)
            assert chunk, "EOF before the command"
            received += chunk
        assert received == b"CAPA\r\n"
        channel.abort()
        client.close()

    run(loop, main)


@pytest.mark.parametrize("first", [b"USER alice\r\n", b"PROXY TCP4 " + b"9" * 120])
def test_a_bad_proxy_header_fails_and_aborts(loop: str, first: bytes) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, proxy_header=True)
        assert channel.proxy_header is not None
        client.sendall(first)
        with pytest.raises(ProxyProtocolError):
            await channel.proxy_header
        assert channel.is_closing() and channel.unread == 0
        client.close()

    run(loop, main)


def test_eof_inside_the_proxy_header(loop: str) -> None:
    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server, proxy_header=True)
        assert channel.proxy_header is not None
        client.sendall(V1_HEADER[:10])
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(ProxyProtocolError):
            await channel.proxy_header
        client.close()

    run(loop, main)
