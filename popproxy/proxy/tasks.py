"""The one place tasks are created: each task is named and kept referenced until it ends."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any

_RUNNING: set[asyncio.Task[Any]] = set()
# The done callback reads no context variable: one empty context per thread (a context cannot
# be entered by two threads at once), not a copy and a bound method per task: 136 bytes for as
# long as a session's task runs, i.e. per idle session.
_local = threading.local()


def _forget(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)


def spawn(coro: Coroutine[Any, Any, Any], name: str,
          loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[Any]:
    """Start ``coro`` as a named task; a strong reference stops the GC from dropping it.
    ``loop``: the running loop, if the caller has it (asyncio.create_task asks for it: a
    getpid() on CPython 3.11, and two Python calls more; one task per session)."""
    if loop is None:
        task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the wrapper
    else:
        task = loop.create_task(coro, name=name)
    _RUNNING.add(task)
    context = getattr(_local, "context", None)
    if context is None:
        context = _local.context = contextvars.Context()
    task.add_done_callback(_forget, context=context)
    return task
