"""popproxy_lockouts_active falls back to 0 when blocks expire, without any new login: the
server recomputes it every LOCKOUT_GAUGE_INTERVAL seconds (a short one and an injected clock
here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from popproxy.policy.decisions import parse_address
from popproxy.policy.schema_lockout import Lockout
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.lockout_store import MemoryStore
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import LOCKOUT_GAUGE_INTERVAL, ProxyServer
from tests.helpers import LoopThread, make_config
from tests.support.waiting import wait_for

WINDOW = 60.0
LOCKOUT: dict[str, Any] = {"enabled": True, "window": WINDOW,
                           "pair": {"free": 1, "block_after": 2}}
ADDRESS = parse_address("192.0.2.7")
INTERVAL = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_: float) -> None:
    return None


class CountingGuard(LockoutGuard):
    """Counts the server's gauge refreshes: the tests wait for rounds, not for time."""

    refreshes = 0

    def refresh_gauge(self) -> None:
        super().refresh_gauge()
        self.refreshes += 1


def _guard(observer: Observer, clock: Clock) -> CountingGuard:
    return CountingGuard(Lockout.model_validate(LOCKOUT), MemoryStore(), b"k" * 32, observer,
                        clock=clock, sleep=_no_sleep)


async def _block(guard: LockoutGuard) -> None:
    """Two wrong passwords, then the check that blocks the pair."""
    assert ADDRESS is not None
    for password in (b"wrong-1", b"wrong-2"):
        await guard.check("alice", ADDRESS)
        await guard.failed("alice", ADDRESS, password)
    assert (await guard.check("alice", ADDRESS)).action == "block"


def _active(observer: Observer, scope: str = "pair") -> float | None:
    return observer.metrics.registry.get_sample_value("popproxy_lockouts_active",
                                                      {"scope": scope})


def test_refresh_gauge_drops_expired_blocks() -> None:
    observer, clock = Observer(), Clock()
    guard = _guard(observer, clock)
    asyncio.run(_block(guard))
    assert _active(observer) == 1
    clock.now += WINDOW - 1
    guard.refresh_gauge()
    assert _active(observer) == 1  # still blocked
    clock.now += 2
    guard.refresh_gauge()
    assert _active(observer) == 0


@contextmanager
def _server_with_a_block(loop_thread: LoopThread, tmp_path: Path
                         ) -> Iterator[tuple[ProxyServer, CountingGuard, Observer, Clock]]:
    """A started server (gauge interval INTERVAL) whose lockout holds one pair block."""
    observer, clock = Observer(), Clock()
    server = ProxyServer(make_config(1, state_dir=str(tmp_path), lockout=LOCKOUT), observer)
    assert server.lockout_gauge_interval == LOCKOUT_GAUGE_INTERVAL == 15.0
    server.lockout_gauge_interval = INTERVAL
    guard = server.lockout = _guard(observer, clock)
    loop_thread.call(server.start({"pop3": 0}))
    try:
        loop_thread.call(_block(guard))
        assert _active(observer) == 1
        yield server, guard, observer, clock
    finally:
        loop_thread.call(server.stop(grace=0))


def test_server_refreshes_the_gauge_without_logins(loop_thread: LoopThread,
                                                   tmp_path: Path) -> None:
    with _server_with_a_block(loop_thread, tmp_path) as (_, guard, observer, clock):
        seen = guard.refreshes
        # Two refresh rounds have run (counted, not slept for): the block still holds.
        wait_for(lambda: guard.refreshes >= seen + 2, what="two gauge refreshes")
        assert _active(observer) == 1
        clock.now += WINDOW + 1  # the block expires; nobody logs in
        wait_for(lambda: _active(observer) == 0, what="the gauge to fall")


def test_gauge_falls_when_a_reload_turns_lockouts_off(loop_thread: LoopThread,
                                                      tmp_path: Path) -> None:
    with _server_with_a_block(loop_thread, tmp_path) as (server, _, observer, _):

        async def reload() -> bool:
            return server.reload_policy(make_config(1, state_dir=str(tmp_path)))

        assert loop_thread.call(reload())
        assert server.lockout is None
        wait_for(lambda: _active(observer) == 0, what="the gauge to fall")
