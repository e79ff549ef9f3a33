"""``Channel``: reads, writes, back-pressure, STLS switching, implicit TLS and PROXY headers.

Driven through in-memory transports (``tests/support/memtransport.py``): the event loop's
callbacks are called directly, so every test is deterministic and needs no sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy.channel import Channel, ChannelClosed, open_channel
from popproxy.proxy.read_queue import MAX_UNREAD
from popproxy.wire.proxyproto import ProxyProtocolError
from tests.support.memtransport import attach, feed, linked_pair, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


async def read_exactly(channel: Channel, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await channel.read(timeout=5)
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


async def tls_pair() -> tuple[Channel, Channel]:
    """A server and a client channel with TLS up between them (STLS style)."""
    server, _, client, _ = linked_pair()
    server_done = server.switch_to_tls(SERVER_CTX, server_side=True)
    await client.start_tls(CLIENT_CTX, server_side=False, server_hostname="localhost")
    await server_done
    return server, client


# ------------------------------------------------------------------ plain reads and writes
def test_read_returns_everything_received_in_one_piece() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        feed(channel, b"USER al")
        feed(channel, b"ice\r\n")
        assert channel.unread == 12
        assert await channel.read() == b"USER alice\r\n"
        assert channel.unread == 0

    run(main)


def test_read_waits_for_data_and_times_out() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        with pytest.raises(TimeoutError):
            await channel.read(timeout=0.01)
        pending = asyncio.ensure_future(channel.read())
        await asyncio.sleep(0)  # let read() start waiting: the data arrives while it waits
        feed(channel, b"STAT\r\n")
        assert await pending == b"STAT\r\n"

    run(main)


def test_one_read_timer_moves_with_each_read_and_still_fires() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        channel = Channel()
        attach(channel)
        first = asyncio.ensure_future(channel.read(timeout=0.05))
        await asyncio.sleep(0)
        feed(channel, b"USER a\r\n")
        assert await first == b"USER a\r\n"
        # The first read's timer is still armed; the next read moves the deadline instead of
        # arming a second timer, and the timeout comes at the new deadline, not the old one.
        started = loop.time()
        with pytest.raises(TimeoutError):
            await channel.read(timeout=0.2)
        assert loop.time() - started >= 0.2

    run(main)


def test_a_read_without_timeout_is_not_cut_by_an_earlier_reads_timer() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        first = asyncio.ensure_future(channel.read(timeout=0.01))
        await asyncio.sleep(0)
        feed(channel, b"NOOP\r\n")
        assert await first == b"NOOP\r\n"
        pending = asyncio.ensure_future(channel.read())  # no timeout: waits as long as it takes
        await asyncio.sleep(0.05)  # past the first read's deadline
        assert not pending.done()
        feed(channel, b"QUIT\r\n")
        assert await pending == b"QUIT\r\n"

    run(main)


def test_a_shorter_timeout_than_the_armed_timer_fires_on_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        channel = Channel()
        attach(channel)
        slow = asyncio.ensure_future(channel.read(timeout=600))  # arms a 600 s timer
        await asyncio.sleep(0)
        slow.cancel()
        await asyncio.sleep(0)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await channel.read(timeout=0.01)  # the upstream's greeting vs response timeouts
        assert loop.time() - started < 1

    run(main)


def test_connection_lost_releases_the_read_timer() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        with pytest.raises(TimeoutError):
            await channel.read(timeout=0.01)
        pending = asyncio.ensure_future(channel.read(timeout=600))
        await asyncio.sleep(0)
        channel.connection_lost(None)  # an idle-timeout timer must not keep it alive 600 s
        assert await pending == b""
        assert channel._read_timer is None

    run(main)


def test_on_connected_is_called_once_with_the_channel() -> None:
    async def main() -> None:
        seen: list[Channel] = []
        channel = Channel(on_connected=seen.append)
        attach(channel)
        channel.connection_made(attach(Channel()))  # type: ignore[arg-type]
        assert seen == [channel]

    run(main)


def test_eof_reads_empty_but_keeps_the_sending_side_open() -> None:
    async def main() -> None:
        channel = Channel()
        transport = attach(channel)
        feed(channel, b"QUIT\r\n")
        # True: the client half-closed after pipelining; its answers must still reach it.
        assert channel.eof_received() is True
        assert await channel.read() == b"QUIT\r\n"
        assert await channel.read() == b""
        channel.write(b"+OK bye\r\n")
        assert transport.sent() == b"+OK bye\r\n"

    run(main)


def test_reading_pauses_past_max_unread_and_resumes_once_read() -> None:
    async def main() -> None:
        channel = Channel()
        transport = attach(channel)
        feed(channel, b"x" * MAX_UNREAD)
        assert not transport.reading_paused
        feed(channel, b"y")
        assert transport.reading_paused
        assert len(await channel.read()) == MAX_UNREAD + 1
        assert not transport.reading_paused

    run(main)


def test_writes_after_close_are_dropped_and_drain_reports_the_close() -> None:
    async def main() -> None:
        channel = Channel()
        transport = attach(channel)
        channel.write(b"+OK\r\n")
        channel.close()
        channel.write(b"lost\r\n")
        assert transport.sent() == b"+OK\r\n" and transport.closing
        channel.connection_lost(None)
        with pytest.raises(ChannelClosed):
            await channel.drain()

    run(main)


def test_drain_waits_while_the_peer_is_not_reading() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        channel.pause_writing()
        assert channel.write_paused
        drained = asyncio.ensure_future(channel.drain())
        await asyncio.sleep(0)
        assert not drained.done()
        channel.resume_writing()
        await drained

    run(main)


# ------------------------------------------------------------------ STLS (RFC 2595 section 4)
def test_switch_to_tls_refuses_plaintext_that_arrived_after_stls() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        feed(channel, b"STLS\r\nUSER injected\r\n")  # CVE-2011-0411: pipelined after STLS
        with pytest.raises(RuntimeError, match="plaintext is pending"):
            channel.switch_to_tls(SERVER_CTX, server_side=True)
        assert not channel.tls_active

    run(main)


def test_tls_round_trip_small_and_record_sliced_writes() -> None:
    async def main() -> None:
        server, client = await tls_pair()
        assert server.tls_active and not server.handshaking
        assert client.ssl_object() is not None
        big = bytes(range(256)) * 400  # 100 KiB: several 16 KiB records in one socket write
        server.write(b"+OK\r\n")
        server.write(big)
        assert await read_exactly(client, 5 + len(big)) == b"+OK\r\n" + big
        with pytest.raises(RuntimeError, match="already active"):
            server.switch_to_tls(SERVER_CTX, server_side=True)

    run(main)


def test_close_sends_close_notify_which_the_peer_reads_as_eof() -> None:
    async def main() -> None:
        server, client = await tls_pair()
        server.write(b"+OK bye\r\n")
        server.close()
        assert await read_exactly(client, 9) == b"+OK bye\r\n"
        assert await client.read(timeout=5) == b""

    run(main)


def test_lost_connection_fails_the_handshake() -> None:
    async def main() -> None:
        channel = Channel()
        attach(channel)
        handshake = channel.switch_to_tls(SERVER_CTX, server_side=True)
        assert channel.handshaking
        channel.connection_lost(None)
        with pytest.raises(ChannelClosed):
            await handshake

    run(main)


def test_garbage_instead_of_a_client_hello_fails_and_aborts() -> None:
    async def main() -> None:
        channel = Channel()
        transport = attach(channel)
        handshake = channel.switch_to_tls(SERVER_CTX, server_side=True)
        feed(channel, b"USER alice\r\n" * 4)
        with pytest.raises(OSError):  # ssl.SSLError
            await handshake
        assert transport.aborted
        assert await channel.read() == b""

    run(main)


# ------------------------------------------------------------------ implicit TLS (port 995)
def test_implicit_tls_holds_the_client_hello_until_started() -> None:
    async def main() -> None:
        server = Channel(implicit_tls=SERVER_CTX)
        server, server_transport, client, _ = linked_pair(server=server)
        client_done = client.switch_to_tls(
            CLIENT_CTX, server_side=False, server_hostname="localhost"
        )
        for _ in range(3):  # the ClientHello reaches the server: nothing is answered yet
            await asyncio.sleep(0)
        assert server_transport.written == [] and not server.tls_active
        await server.start_implicit_tls()
        await client_done
        client.write(b"CAPA\r\n")
        assert await read_exactly(server, 6) == b"CAPA\r\n"

    run(main)


# ------------------------------------------------------------------ PROXY protocol header
def test_proxy_header_first_then_the_pop3_bytes_behind_it() -> None:
    async def main() -> None:
        channel = Channel(proxy_header=True)
        attach(channel)
        for byte in b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 110\r\nCAPA\r\n":
            feed(channel, bytes([byte]))
        assert channel.proxy_header is not None
        header = await channel.proxy_header
        assert header.source is not None and str(header.source[0]) == "198.51.100.9"
        assert await channel.read() == b"CAPA\r\n"

    run(main)


def test_a_bad_proxy_header_aborts_before_any_byte_is_read() -> None:
    async def main() -> None:
        channel = Channel(proxy_header=True)
        transport = attach(channel)
        feed(channel, b"CAPA\r\nUSER alice\r\n")
        assert channel.proxy_header is not None
        with pytest.raises(ProxyProtocolError):
            await channel.proxy_header
        assert transport.aborted
        assert await channel.read() == b""

    run(main)


# ------------------------------------------------------------------ a real socket
def test_open_channel_connects_over_loopback() -> None:
    async def main() -> None:
        async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"+OK ready\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        channel = await open_channel("127.0.0.1", port)
        assert await read_exactly(channel, 11) == b"+OK ready\r\n"
        assert channel.peername()[1] == port
        channel.close()
        server.close()
        await server.wait_closed()

    run(main)
