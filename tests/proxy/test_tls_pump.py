"""``TlsPump``: handshake, decryption, write coalescing and record slicing, close_notify.

Two pumps talk through in-memory transports; the client side's callbacks are recorded.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from popproxy.proxy.tls_pump import TLS_COALESCE_LIMIT, TLS_WRITE_SLICE, TlsPump
from tests.support.memtransport import MemoryTransport, tls_contexts

SERVER_CTX, CLIENT_CTX = tls_contexts()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


@dataclass
class Sink:
    """What a pump reported to its channel."""

    data: bytearray = field(default_factory=bytearray)
    eof: bool = False
    errors: list[BaseException] = field(default_factory=list)

    def pump(self, ctx: ssl.SSLContext, transport: MemoryTransport, server: bool) -> TlsPump:
        return TlsPump(
            ctx, transport, server_side=server, server_hostname=None if server else "localhost",  # type: ignore[arg-type]
            deliver=self.data.extend, on_eof=self.set_eof, on_error=self.errors.append,
        )

    def set_eof(self) -> None:
        self.eof = True


@dataclass
class Pair:
    server: TlsPump
    server_out: MemoryTransport
    client: TlsPump
    client_sink: Sink


async def connected() -> Pair:
    server_out, client_out = MemoryTransport(), MemoryTransport()
    server_sink, client_sink = Sink(), Sink()
    server = server_sink.pump(SERVER_CTX, server_out, server=True)
    client = client_sink.pump(CLIENT_CTX, client_out, server=False)
    server_out.peer, client_out.peer = client.receive, server.receive
    handshakes = [server.handshake, client.handshake]  # None once the handshake is over
    client.pump()  # the ClientHello
    await asyncio.gather(*(h for h in handshakes if h is not None))
    assert not server.handshaking and server.handshake is None
    await asyncio.sleep(0)  # the scheduled flush of the session tickets
    return Pair(server, server_out, client, client_sink)


async def settle(sink: Sink, size: int) -> None:
    while len(sink.data) < size:
        await asyncio.sleep(0)


def test_handshake_then_plaintext_both_ways() -> None:
    async def main() -> None:
        pair = await connected()
        assert not pair.server.handshaking and not pair.client.handshaking
        pair.server.write(b"+OK POP3 ready\r\n")
        await settle(pair.client_sink, 16)
        assert bytes(pair.client_sink.data) == b"+OK POP3 ready\r\n"

    run(main)


def test_small_writes_in_one_loop_step_leave_in_one_send() -> None:
    async def main() -> None:
        pair = await connected()
        sends = len(pair.server_out.written)
        for line in (b"+OK 2 messages\r\n", b"1 120\r\n", b"2 340\r\n", b".\r\n"):
            pair.server.write(line)
        assert len(pair.server_out.written) == sends  # nothing sent yet: coalescing
        await settle(pair.client_sink, 16 + 7 + 7 + 3)
        assert len(pair.server_out.written) == sends + 1

    run(main)


def test_coalescing_stops_at_the_limit() -> None:
    async def main() -> None:
        pair = await connected()
        sends = len(pair.server_out.written)
        pair.server.write(b"a" * 1000)
        assert len(pair.server_out.written) == sends  # coalescing
        pair.server.write(b"a" * TLS_WRITE_SLICE)  # one record: the limit is passed
        assert len(pair.server_out.written) == sends + 1
        assert len(pair.server_out.written[-1]) >= TLS_COALESCE_LIMIT

    run(main)


def test_large_writes_go_out_as_records_in_one_send() -> None:
    async def main() -> None:
        pair = await connected()
        sends = len(pair.server_out.written)
        body = bytes(range(256)) * (3 * TLS_WRITE_SLICE // 256 + 1)
        pair.server.write(b"+OK\r\n")  # waits for coalescing, then leads the records
        pair.server.write(body)
        assert len(pair.server_out.written) == sends + 1
        await settle(pair.client_sink, 5 + len(body))
        assert bytes(pair.client_sink.data) == b"+OK\r\n" + body

    run(main)


def test_close_sends_close_notify_and_the_peer_sees_eof() -> None:
    async def main() -> None:
        pair = await connected()
        pair.server.close()
        for _ in range(3):
            await asyncio.sleep(0)
        assert pair.client_sink.eof and not pair.client_sink.errors

    run(main)


def test_close_before_the_handshake_sends_nothing() -> None:
    async def main() -> None:
        out = MemoryTransport()
        server = Sink().pump(SERVER_CTX, out, server=True)
        server.close()
        assert out.written == []
        assert server.handshaking

    run(main)


def test_a_broken_handshake_reports_the_error_and_fails_the_future() -> None:
    async def main() -> None:
        sink = Sink()
        server = sink.pump(SERVER_CTX, MemoryTransport(), server=True)
        handshake = server.handshake
        assert handshake is not None
        server.receive(b"CAPA\r\n" * 10)
        assert len(sink.errors) == 1 and isinstance(sink.errors[0], ssl.SSLError)
        with pytest.raises(ssl.SSLError):
            await handshake

    run(main)


def test_records_are_all_delivered_when_several_arrive_at_once() -> None:
    # _read_records stops when nothing is left to decrypt: three records in one receive
    # (one socket read) must still all come out, and a partial record must wait for the rest.
    async def main() -> None:
        pair = await connected()
        pair.server_out.peer = None  # keep the records; hand them over by hand
        start = len(pair.server_out.written)
        for line in (b"+OK one\r\n", b"+OK two\r\n", b"+OK three\r\n"):
            pair.server.write(line)
            pair.server.flush()  # one record each
        records = b"".join(pair.server_out.written[start:])
        assert len(pair.server_out.written) - start == 3
        pair.client.receive(records[:-5])  # the last record cut short
        assert bytes(pair.client_sink.data) == b"+OK one\r\n+OK two\r\n"
        pair.client.receive(records[-5:])
        assert bytes(pair.client_sink.data) == b"+OK one\r\n+OK two\r\n+OK three\r\n"
        assert not pair.client_sink.errors and not pair.client_sink.eof

    run(main)
