"""The event loop popproxy runs on (``--event-loop``), and running a coroutine on it.

A loop factory handed to ``asyncio.Runner`` (Python 3.11+), not ``uvloop.install()``: that
sets an event loop policy, which uvloop deprecates from Python 3.12 (a DeprecationWarning at
every start) and Python 3.14 deprecates as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory | None:
    """uvloop's loop (libuv) for ``uvloop``, ``ImportError`` if uvloop is not installed (the
    [uvloop] extra); None for ``asyncio``: the standard loop."""
    if name != "uvloop":
        return None
    import uvloop  # optional: the [uvloop] extra

    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run_on(factory: LoopFactory | None, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop from ``factory`` (None: the standard loop)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
