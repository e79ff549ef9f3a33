"""Waiting for live connections to end: at ``stop()`` (for the shutdown grace, then cut) and
before a reload closes the lockout store or scan service the sessions started under.

Both wait for more than the sessions: a connection still before its session (waiting for its
PROXY header or a session slot) holds the settings, and so the stores, of the policy it arrived
under, and becomes a session once it gets there.  ``ProxyServer`` keeps those in a map of its
own (``_connecting``), left as the session starts (``_sessions``).

A connection is in that map from its task's first step.  Its settings were fixed a step or
two earlier, when asyncio accepted it (``_new_channel``), so a reload or ``stop()`` can run in
between, while the connection is in neither map: ``on_current_stores`` gives it the server's
stores at that first step (a reload has closed, or is closing, the ones it was given), and
``drain`` lets those first steps run before it looks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import Any

from popproxy.proxy.client_channel import ClientChannel
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.shutdown import tell_shutdown

log = logging.getLogger("popproxy.server")

# After the grace, cut connections get this long to unwind (their upstream is closed without
# QUIT, the shutdown notice flushed) before stop() closes the stores under them.
CUT_WAIT = 5.0
# Loop steps ``drain`` lets run before it looks, so every connection accepted before stop()
# closed the listeners is in ``connecting``: the Acceptor's callback (acceptor.py, in the step
# that read the listening socket) spawns the session's task, whose first step enters
# ``connecting`` (step 1).
ACCEPT_STEPS = 1

Tasks = Collection[asyncio.Task[Any]]


async def drain(sessions: Tasks, channels: dict[asyncio.Task[Any], ClientChannel],
                connecting: dict[asyncio.Task[Any], ClientChannel], grace: float) -> None:
    """Let ``sessions`` and ``connecting`` end for ``grace`` seconds, then cut the rest: a
    session waiting for a command is told why first (``tell_shutdown``, by its channel in
    ``channels``); a connection before its session has nothing to be told and is aborted."""
    for _ in range(ACCEPT_STEPS):
        await asyncio.sleep(0)
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


def on_current_stores(settings: SessionSettings, lockout: LockoutGuard | None,
                      scan: ScanService | None) -> SessionSettings:
    """``settings`` with the server's current lockout store and scan service, for a connection
    whose task starts after a reload replaced them (and began closing the old ones: it was not
    among the connections ``close_after`` waits for).  The rest stays as accepted: the channel
    was made for that listener (PROXY header or not, implicit TLS context)."""
    if settings.lockout is lockout and settings.scan is scan:
        return settings
    return replace(settings, lockout=lockout, scan=scan)
