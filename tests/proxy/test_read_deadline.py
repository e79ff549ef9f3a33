"""A read's long deadline and the timer that serves it (``read_queue.ReadQueue._arm_read_timer``
with ``deadlines``' wheel), through ``test_read_queue``'s minimal channel.  Its own file:
``test_read_queue.py`` is being reshaped on other branches (issue 18 item 6)."""

from __future__ import annotations

import asyncio

import pytest

from popproxy.proxy import deadlines
from tests.proxy.test_read_queue import Queue


def test_reads_within_a_tick_keep_one_long_timer_and_it_still_fires_at_most_a_tick_late(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read of a login re-armed its long deadline when the armed bucket lay past the new
    deadline by less than a TICK (issue 18: a timer removed and added per read); a long
    deadline may be a TICK late anyway, so that timer is kept, and it still times out."""
    monkeypatch.setattr(deadlines, "COARSE_MIN", 0.2)
    monkeypatch.setattr(deadlines, "TICK", 0.1)

    async def main() -> None:
        loop, queue = asyncio.get_running_loop(), Queue()
        armed: list[object] = []
        real = deadlines.call_at

        def counting(*args: object) -> deadlines.Timer:
            timer = real(*args)  # type: ignore[arg-type]
            armed.append(timer)
            return timer

        monkeypatch.setattr(deadlines, "call_at", counting)
        for command in (b"USER a\r\n", b"PASS b\r\n", b"STAT\r\n"):
            reader = asyncio.ensure_future(queue.read(timeout=0.3))
            await asyncio.sleep(0)
            queue._deliver(command)
            queue._wake_reader()  # (a no-op where _deliver woke it already)
            assert await reader == command
        assert len(armed) == 1 and queue._read_timer is armed[0]  # one timer, kept
        started = loop.time()
        with pytest.raises(TimeoutError):
            await queue.read(timeout=0.3)
        waited = loop.time() - started
        assert 0.3 <= waited <= 0.3 + 0.1 + 0.05  # never early, at most a TICK late (+ slack)

    asyncio.run(main())
