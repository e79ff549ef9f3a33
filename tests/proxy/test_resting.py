"""``resting.rest_soon``: an upstream rests a moment after its last answer, not at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from popproxy.proxy import resting
from popproxy.proxy.socket_channel import SocketChannel
from tests.support.sockpair import LOOPS, run, tcp_pair

pytestmark = pytest.mark.parametrize("loop", LOOPS)


def test_a_channel_rests_after_the_delay_not_at_once(loop: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resting, "REST_AFTER", 0.05)

    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        resting.rest_soon(channel)
        assert channel._reading  # still watched: the next command may come at once
        await asyncio.sleep(0.2)
        assert not channel._reading
        client.sendall(b"+OK\r\n")  # waited in the kernel; the next read watches again
        assert await channel.read(timeout=5) == b"+OK\r\n"
        channel.abort()
        client.close()

    run(loop, main)


def test_a_channel_reading_again_before_the_delay_stays_watched(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next command came first: its answer is awaited, the descriptor must stay watched
    (or the session would wait for its timeout)."""
    monkeypatch.setattr(resting, "REST_AFTER", 0.05)

    async def main() -> None:
        server, client = tcp_pair()
        channel = SocketChannel(server)
        resting.rest_soon(channel)
        reading = asyncio.ensure_future(channel.read(timeout=5))
        await asyncio.sleep(0.2)  # the timer ran while the read waited
        assert channel._reading and not reading.done()
        client.sendall(b"+OK\r\n")
        assert await reading == b"+OK\r\n"
        channel.abort()
        client.close()

    run(loop, main)


def test_a_channel_put_late_in_a_tick_still_waits_the_whole_delay(
        loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (review): with one timer armed for the first channel, a channel put on the
    list just before it fired rested at once, not REST_AFTER after its last answer."""
    monkeypatch.setattr(resting, "REST_AFTER", 0.2)

    async def main() -> None:
        (first_sock, first_peer), (late_sock, late_peer) = tcp_pair(), tcp_pair()
        first, late = SocketChannel(first_sock), SocketChannel(late_sock)
        resting.rest_soon(first)
        await asyncio.sleep(0.18)  # just before the first tick
        resting.rest_soon(late)
        put = time.monotonic()
        while late._reading:
            await asyncio.sleep(0.01)
        assert time.monotonic() - put >= 0.2 - 0.02  # (timer granularity)
        assert not first._reading
        for channel, peer in ((first, first_peer), (late, late_peer)):
            channel.abort()
            peer.close()

    run(loop, main)


def test_rest_all_now_rests_every_channel_due_and_a_closed_one_is_harmless(loop: str) -> None:
    async def main() -> None:
        pairs = [tcp_pair() for _ in range(3)]
        channels = [SocketChannel(server) for server, _ in pairs]
        for channel in channels:
            resting.rest_soon(channel)
        channels[2].abort()  # closed while due: rest() is a no-op on it
        resting.rest_all_now()
        assert [channel._reading for channel in channels] == [False, False, False]
        for channel, (_, client) in zip(channels, pairs, strict=True):
            channel.abort()
            client.close()

    run(loop, main)
