"""An idle session's upstream stops being watched a moment after its last answer, not at once.

Why: a watched descriptor costs about 0.55 KiB per idle session on uvloop (its poll handle, the
callback's handle and context), so an idle session's upstream rests (``SocketChannel.rest``).
But resting and watching again is an ``add_reader``/``remove_reader`` pair per command, about
4.5 us on uvloop (a poll handle made and freed, two ``epoll_ctl`` calls, and uvloop's check
for a transport on the descriptor, which raises and catches a ``KeyError`` each time), and a
session that is not idle sends its next command within milliseconds (issue 18: CPU per login).
So ``rest_soon`` puts the channel on its loop's list, and a loop timer that ticks every
``REST_AFTER`` seconds while the list is not empty rests the channels that were put there
before the previous tick: each rests between one and two ``REST_AFTER`` after its last answer,
never sooner.  A channel that is reading again by then stays watched (``rest`` checks, as it
always did).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol

# An upstream stays watched for one to two of these after its last answer: far longer than a
# client takes between the commands of one session, far shorter than the shortest idle
# timeout (RFC 1939 section 3: 10 minutes) and than bench.py's settle time before it measures
# idle memory (2 s).
REST_AFTER = 0.5
_local = threading.local()


class Restable(Protocol):
    """A channel that can stop being watched.  One that has a ``_loop`` attribute (a
    SocketChannel) must run on that loop: ``rest_soon`` takes it instead of asking asyncio."""

    def rest(self) -> None: ...


class _Resting:
    """The channels of one loop waiting to rest, in two generations, and the one timer."""

    __slots__ = ("_due", "_fresh", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._fresh: set[Restable] = set()  # put on the list since the last tick
        self._due: set[Restable] = set()  # put there before it: rested at the next tick
        self._timer: asyncio.TimerHandle | None = None

    def add(self, channel: Restable) -> None:
        self._due.discard(channel)  # its last answer is this one: a full wait again
        self._fresh.add(channel)
        if self._timer is None:
            self._timer = self.loop.call_later(REST_AFTER, self._tick)

    def _tick(self) -> None:
        self._timer = None
        due, self._due, self._fresh = self._due, self._fresh, set()
        for channel in due:
            channel.rest()
        if self._due:
            self._timer = self.loop.call_later(REST_AFTER, self._tick)

    def run(self) -> None:
        """Rest every channel on the list now (``rest`` leaves one that is reading again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        channels = self._due | self._fresh
        self._due, self._fresh = set(), set()
        for channel in channels:
            channel.rest()


def _resting(loop: asyncio.AbstractEventLoop) -> _Resting:
    resting: _Resting | None = getattr(_local, "resting", None)
    if resting is None or resting.loop is not loop:  # one per loop (tests run a loop each)
        resting = _local.resting = _Resting(loop)
    return resting


def rest_soon(channel: Restable) -> None:
    """``channel.rest()`` one to two ``REST_AFTER`` from now, with the other channels due."""
    # A SocketChannel knows the running loop (asking asyncio is a getpid() on CPython 3.11);
    # a test's in-memory channel may not.
    loop = getattr(channel, "_loop", None)
    _resting(asyncio.get_running_loop() if loop is None else loop).add(channel)


def rest_all_now() -> None:
    """Rest every channel on this loop's list now (tests)."""
    _resting(asyncio.get_running_loop()).run()
