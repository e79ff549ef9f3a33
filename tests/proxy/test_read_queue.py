"""``ReadQueue``: what a channel's ``read`` returns, its deadline and its flow control, driven
through a minimal channel (the hooks record when reading would pause and resume)."""

from __future__ import annotations

import asyncio

import pytest

from popproxy.proxy import deadlines
from popproxy.proxy.read_queue import MAX_UNREAD, ReadQueue


class Queue(ReadQueue):
    __slots__ = ("_chunks", "_deadline", "_eof", "_loop", "_read_paused", "_read_timer",
                 "_read_waiter", "_reading", "_unread", "calls")

    def __init__(self) -> None:
        self._loop, self._reading = asyncio.get_running_loop(), True
        self._chunks: list[bytes] = []
        self._unread, self._eof, self._read_paused, self._deadline = 0, False, False, 0.0
        self._read_waiter: asyncio.Future[bytes] | None = None
        self._read_timer: deadlines.Timer | None = None
        self.calls: list[str] = []

    def _pause_reading(self) -> None:
        self.calls.append("pause")

    def _resume_reading(self) -> None:
        self.calls.append("resume")


def test_read_joins_what_arrived_and_reports_eof_after_it() -> None:
    async def main() -> None:
        queue = Queue()
        reader = asyncio.ensure_future(queue.read())
        await asyncio.sleep(0)
        assert queue.awaiting_read
        for byte in b"USER a\r\n":  # one wake-up's reads: one read() gets them all
            queue._deliver(bytes([byte]))
        assert queue.unread == 8 and not reader.done()
        queue._wake_reader()
        assert await reader == b"USER a\r\n" and queue.unread == 0
        queue._set_eof()
        assert await queue.read() == b""

    asyncio.run(main())


def test_pauses_past_max_unread_and_resumes_when_read() -> None:
    async def main() -> None:
        queue = Queue()
        queue._deliver(b"x" * MAX_UNREAD)
        assert queue.calls == []
        queue._deliver(b"x")
        assert queue.calls == ["pause"]
        assert len(await queue.read()) == MAX_UNREAD + 1
        assert queue.calls == ["pause", "resume"]

    asyncio.run(main())


@pytest.mark.parametrize("first", ["timed_out", "answered"])
def test_a_read_without_timeout_is_not_cut_by_an_earlier_reads_timer(
        first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if first == "answered":  # a long (wheel) deadline: the one kept after its read's answer
        monkeypatch.setattr(deadlines, "COARSE_MIN", 0.01)
        monkeypatch.setattr(deadlines, "TICK", 0.01)

    async def main() -> None:
        queue = Queue()
        if first == "timed_out":
            with pytest.raises(TimeoutError):
                await queue.read(timeout=0.02)
        else:  # answered in time: its timer is still armed (moved lazily, not cancelled)
            reader = asyncio.ensure_future(queue.read(timeout=0.02))
            await asyncio.sleep(0)
            queue._deliver(b"NOOP\r\n")
            queue._wake_reader()
            assert await reader == b"NOOP\r\n" and queue._read_timer is not None
        pending = asyncio.ensure_future(queue.read())  # no timeout: waits as long as it takes
        await asyncio.sleep(0.05)  # past the first read's deadline
        assert not pending.done() and queue._read_timer is None
        queue._deliver(b"QUIT\r\n")
        queue._wake_reader()
        assert await pending == b"QUIT\r\n"

    asyncio.run(main())


def test_one_read_timer_moves_with_each_read_and_still_fires(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Long deadlines (the idle timeout) share the wheel and are kept; made short here.
    monkeypatch.setattr(deadlines, "COARSE_MIN", 0.01)
    monkeypatch.setattr(deadlines, "TICK", 0.01)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue = Queue()
        first = asyncio.ensure_future(queue.read(timeout=0.05))
        await asyncio.sleep(0)
        queue._deliver(b"USER a\r\n")
        queue._wake_reader()
        assert await first == b"USER a\r\n"
        armed = queue._read_timer
        # The next read moves the deadline instead of arming a second timer; the timeout
        # comes at the new deadline, not the old one.
        started = loop.time()
        second = asyncio.ensure_future(queue.read(timeout=0.2))
        await asyncio.sleep(0)
        assert armed is not None and queue._read_timer is armed  # the same timer, not cancelled
        with pytest.raises(TimeoutError):
            await second
        assert loop.time() - started >= 0.2

    asyncio.run(main())


def test_a_shorter_timeout_than_the_armed_timer_fires_on_time() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        queue = Queue()
        slow = asyncio.ensure_future(queue.read(timeout=600))  # arms a 600 s timer
        await asyncio.sleep(0)
        slow.cancel()
        await asyncio.sleep(0)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await queue.read(timeout=0.01)  # the upstream's greeting vs response timeouts
        assert loop.time() - started < 1
        queue._drop_read_timer()

    asyncio.run(main())


def test_a_short_deadline_timer_goes_with_its_read_and_a_long_one_stays() -> None:
    """A loop timer of its own (an upstream greeting's 10 s) is memory held until it would
    fire: dropped once its read has data.  A wheel entry (the idle timeout) is kept for the
    next read, which moves it instead of arming a new one."""

    async def main() -> None:
        queue = Queue()
        reader = queue.read(timeout=deadlines.COARSE_MIN / 3)
        short_timer = queue._read_timer
        assert short_timer is not None and type(short_timer) is not deadlines.CoarseTimer
        queue._deliver(b"+OK\r\n")
        queue._wake_reader()
        assert await reader == b"+OK\r\n" and queue._read_timer is None
        reader = queue.read(timeout=deadlines.COARSE_MIN * 20)
        long_timer = queue._read_timer
        assert long_timer is not None and type(long_timer) is deadlines.CoarseTimer
        queue._deliver(b"NOOP\r\n")
        queue._wake_reader()
        assert await reader == b"NOOP\r\n" and queue._read_timer is long_timer
        queue._drop_read_timer()

    asyncio.run(main())
