"""Waiting for live connections to end: at ``stop()`` (for the shutdown grace, then cut) and
before a reload closes the lockout store or scan service the sessions started under.

Both wait for more than the sessions: a connection still before its session (waiting for its
PROXY header or a session slot) holds the settings, and so the stores, of the policy it arrived
under, and becomes a session once it gets there.  ``ProxyServer`` keeps those in a map of its
own (``_connecting``), left as the session starts (``_sessions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.shutdown import tell_shutdown

log = logging.getLogger("popproxy.server")

# After the grace, cut connections get this long to unwind (their upstream is closed without
# QUIT, the shutdown notice flushed) before stop() closes the stores under them.
CUT_WAIT = 5.0

Tasks = Collection[asyncio.Task[Any]]


async def drain(sessions: Tasks, channels: dict[asyncio.Task[Any], ClientChannel],
                connecting: dict[asyncio.Task[Any], ClientChannel], grace: float) -> None:
    """Let ``sessions`` and ``connecting`` end for ``grace`` seconds, then cut the rest: a
    session waiting for a command is told why first (``tell_shutdown``, by its channel in
    ``channels``); a connection before its session has nothing to be told and is aborted."""
    pending = set(sessions) | set(connecting)
    if not pending:
        return
    log.info("waiting up to %.0fs for %d connections", grace, len(pending))
    _, still = await asyncio.wait(pending, timeout=grace)
    for task in still:
        if (channel := connecting.get(task)) is not None:
            channel.abort()
        else:
            tell_shutdown(channels.get(task))  # -ERR [SYS/TEMP] server shutting down
        task.cancel()
    if still:
        await asyncio.wait(still, timeout=CUT_WAIT)


async def close_after(close: Callable[[], Awaitable[None]], tasks: Tasks) -> None:
    """Close a replaced scan service or lockout store (threads, Redis pool, host file)
    once the connections that started under it, and may still use it, have ended (a closed
    store would fail their logins by the fail mode).  ``asyncio.wait`` never cancels them."""
    if tasks:
        await asyncio.wait(tasks)
    await close()
