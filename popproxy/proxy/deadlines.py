"""Long read deadlines of every channel on an event loop, behind one loop timer.

Why: a loop timer per connection costs memory for as long as the connection is idle: on uvloop
a libuv timer handle and its wrapper (about 0.6 KiB), on asyncio's loop a ``TimerHandle`` and
its context (about 0.3 KiB), and an idle session has two (its client's idle timeout, RFC 1939
section 3, and its upstream's response timeout).  Those deadlines are long, so they need no
sub-second precision: a deadline at least ``COARSE_MIN`` seconds away goes into a bucket of
``TICK`` seconds, one loop timer waits for the earliest bucket, and the deadline fires up to
``TICK`` late, never early.  Shorter deadlines (tests, short timeouts set by hand) get the
loop's own timer.  The upstream greeting's (``greeting_timeout``, 10 s by default) is in the
wheel too: a loop timer armed and cancelled at every login cost about 2 us (issue 18), and an
upstream that has not greeted after 10 s can wait 11.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from typing import Protocol

# Shorter timeouts keep a timer of their own: TICK would be a large share of them.
COARSE_MIN = 5.0
# A long deadline fires at most this late: 10 % of the default greeting timeout, 0.2 % of the
# 600 s minimum idle timeout (RFC 1939 section 3).
TICK = 1.0
_local = threading.local()


class Timer(Protocol):
    """What a channel needs of its read timer (``asyncio.TimerHandle`` has both)."""

    def when(self) -> float: ...
    def cancel(self) -> None: ...


def call_at(loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], None]) -> Timer:
    """Call ``callback`` at loop time ``when`` (a long deadline: up to ``TICK`` later)."""
    if when - loop.time() < COARSE_MIN:
        return loop.call_at(when, callback)
    wheel: _Wheel | None = getattr(_local, "wheel", None)
    if wheel is None or wheel.loop is not loop:  # one per loop (tests run a loop each)
        wheel = _local.wheel = _Wheel(loop)
    return wheel.add(math.ceil(when / TICK), callback)


class CoarseTimer:
    """A deadline in a bucket of its loop's wheel."""

    # Slots: one per idle connection (the point of this module).
    __slots__ = ("_wheel", "callback", "key")

    def __init__(self, wheel: _Wheel, key: int, callback: Callable[[], None]) -> None:
        self._wheel, self.key, self.callback = wheel, key, callback

    def when(self) -> float:
        return self.key * TICK

    def cancel(self) -> None:
        self._wheel.remove(self)


class _Wheel:
    """The buckets of one loop (bucket key: the deadline in ticks, rounded up) and the one
    loop timer for the earliest of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._buckets: dict[int, set[CoarseTimer]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_key = 0

    def add(self, key: int, callback: Callable[[], None]) -> CoarseTimer:
        timer = CoarseTimer(self, key, callback)
        self._buckets.setdefault(key, set()).add(timer)
        if self._timer is None or key < self._timer_key:
            self._schedule(key)
        return timer

    def remove(self, timer: CoarseTimer) -> None:
        bucket = self._buckets.get(timer.key)
        if bucket is not None:
            bucket.discard(timer)
            if not bucket:
                del self._buckets[timer.key]

    def _schedule(self, key: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_key = self.loop.call_at(key * TICK, self._fire), key

    def _fire(self) -> None:
        self._timer, due = None, self._timer_key
        # At most one key per second of the longest timeout: a short walk once a second.
        for key in sorted(k for k in self._buckets if k <= due):
            for timer in self._buckets.pop(key, ()):
                timer.callback()
        # A callback may have re-armed (add) while no timer was set, scheduling the loop timer
        # for its own far deadline: it must still wake for the earliest bucket left.
        if self._buckets:
            first = min(self._buckets)
            if self._timer is None or first < self._timer_key:
                self._schedule(first)
