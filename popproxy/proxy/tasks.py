"""The one place tasks are created: each task is named and kept referenced until it ends."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_RUNNING: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start ``coro`` as a named task; a strong reference stops the GC from dropping it."""
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the wrapper
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task
