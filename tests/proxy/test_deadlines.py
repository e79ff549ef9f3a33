"""Long read deadlines share one loop timer, fire late by at most a tick, never early."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from popproxy.proxy import deadlines
from popproxy.proxy.deadlines import COARSE_MIN, TICK


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def loop_timers(loop: asyncio.AbstractEventLoop) -> int:
    return len([h for h in loop._scheduled if not h.cancelled()])  # type: ignore[attr-defined]


def test_a_short_deadline_gets_the_loops_own_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        timer = deadlines.call_at(loop, loop.time() + 1, lambda: None)
        assert isinstance(timer, asyncio.TimerHandle)
        timer.cancel()

    run(main)


def test_long_deadlines_share_one_loop_timer_and_cancel_leaves_nothing() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = loop_timers(loop)
        timers = [deadlines.call_at(loop, loop.time() + COARSE_MIN + 1 + i, lambda: None)
                  for i in range(100)]
        assert loop_timers(loop) == before + 1
        assert not any(isinstance(t, asyncio.TimerHandle) for t in timers)
        for timer in timers:
            timer.cancel()
        wheel = deadlines._local.wheel
        assert wheel._buckets == {}  # a closed channel is not kept until its deadline

    run(main)


def test_a_long_deadline_fires_late_by_at_most_a_tick_never_early(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Scaled down so the test takes a fraction of a second: a 0.3 s "long" deadline, 0.1 s ticks.
    monkeypatch.setattr(deadlines, "COARSE_MIN", 0.2)
    monkeypatch.setattr(deadlines, "TICK", 0.1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        # More than a tick apart: deadlines in one bucket fire together, in no set order.
        due = {name: loop.time() + delay for name, delay in (("a", 0.3), ("b", 0.45), ("c", 0.6))}

        def fire(name: str) -> Callable[[], None]:
            return lambda: fired.append((name, loop.time()))

        timers = {name: deadlines.call_at(loop, when, fire(name)) for name, when in due.items()}
        timers["c"].cancel()
        await asyncio.sleep(0.9)
        assert [name for name, _ in fired] == ["a", "b"]
        for name, at in fired:
            assert due[name] <= at <= due[name] + 0.1 + 0.25  # a tick, plus a loaded box's slack

    run(main)


def test_a_deadline_added_while_the_wheel_fires_is_not_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines, "COARSE_MIN", 0.05)
    monkeypatch.setattr(deadlines, "TICK", 0.05)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []

        def first() -> None:  # re-arms like a channel whose read moved its deadline
            fired.append("first")
            deadlines.call_at(loop, loop.time() + 0.1, lambda: fired.append("second"))

        deadlines.call_at(loop, loop.time() + 0.1, first)
        await asyncio.sleep(0.4)
        assert fired == ["first", "second"]

    run(main)


def test_each_loop_gets_its_own_wheel() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines.call_at(loop, loop.time() + COARSE_MIN + TICK, lambda: None).cancel()
        assert deadlines._local.wheel.loop is loop

    run(main)
    run(main)


def test_a_deadline_re_armed_while_firing_does_not_delay_an_earlier_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a channel's timer re-arms for its moved deadline from inside the wheel's
    firing; that far deadline took the one loop timer, and a bucket due in between waited
    for it (an idle timeout 10 minutes late)."""
    monkeypatch.setattr(deadlines, "COARSE_MIN", 0.2)
    monkeypatch.setattr(deadlines, "TICK", 0.1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        fired: dict[str, float] = {}

        def re_arm() -> None:
            fired["a"] = loop.time()
            deadlines.call_at(loop, loop.time() + 30, lambda: None)  # moved far away

        def earlier() -> None:
            fired["b"] = loop.time()

        deadlines.call_at(loop, start + 0.3, re_arm)
        deadlines.call_at(loop, start + 0.5, earlier)
        await asyncio.sleep(1.0)
        assert "a" in fired and "b" in fired
        assert start + 0.5 <= fired["b"] <= start + 0.5 + 0.1 + 0.3  # a tick late, plus slack

    run(main)
