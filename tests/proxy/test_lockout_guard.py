"""The guard around a login: delays are slept through the injected sleep, blocks returned.

The lockout model itself is tested in tests/policy/test_lockout.py, the key file in
test_lockout_secret.py and the gauge in test_lockout_gauge.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

from popproxy.policy.schema_lockout import Lockout
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.lockout_store import FailoverStore, MemoryStore
from popproxy.proxy.observe import Observer
from tests.support.fake_time import FakeTime

SECRET = b"s" * 32
HOME = ipaddress.ip_address("192.0.2.10")
AWAY = ipaddress.ip_address("198.51.100.20")
# Small limits so a handful of failures walks through allow, delay and block.
SETTINGS = Lockout.model_validate({"pair": {"free": 2, "block_after": 4},
                                   "base_delay": 1.5, "max_delay": 60})


def _guard(store: MemoryStore | None = None) -> tuple[LockoutGuard, FakeTime]:
    fake = FakeTime()
    return LockoutGuard(SETTINGS, store or MemoryStore(), SECRET, Observer(), clock=fake.clock,
                        sleep=fake.sleep), fake


def test_free_failures_then_doubling_delays_then_a_block() -> None:
    async def main() -> tuple[list[str], list[float]]:
        guard, fake = _guard()
        actions = []
        for attempt in range(5):
            actions.append((await guard.check("alice", HOME)).action)
            await guard.failed("alice", HOME, f"guess{attempt}".encode())
        return actions, fake.slept

    actions, slept = asyncio.run(main())
    assert actions == ["allow", "allow", "delay", "delay", "block"]
    assert slept == [1.5, 3.0]  # base_delay * 2**(n - free); a block is not slept


def test_the_username_is_case_folded() -> None:
    async def main() -> str:
        guard, _ = _guard()
        for attempt in range(4):
            await guard.failed("Alice" if attempt % 2 else "ALICE", HOME, b"%d" % attempt)
        return (await guard.check("alice", HOME)).action

    assert asyncio.run(main()) == "block"


def test_success_clears_the_pair_but_not_other_networks() -> None:
    async def main() -> tuple[str, str]:
        guard, _ = _guard()
        for attempt in range(4):
            await guard.failed("alice", HOME, b"%d" % attempt)
            await guard.failed("alice", AWAY, b"%d" % attempt)
        await guard.succeeded("alice", HOME)
        return (await guard.check("alice", HOME)).action, (await guard.check("alice", AWAY)).action

    assert asyncio.run(main()) == ("allow", "block")


def test_from_policy_picks_the_store(tmp_path: Path) -> None:
    local = LockoutGuard.from_policy(Lockout(), tmp_path / "a", Observer())
    assert isinstance(local._store, MemoryStore)
    shared = LockoutGuard.from_policy(
        Lockout(redis_url="redis://127.0.0.1:1/0"), tmp_path / "b", Observer())
    assert isinstance(shared._store, FailoverStore)
    assert (tmp_path / "a" / "lockout.key").exists()
    asyncio.run(shared.close())


def test_an_unreachable_redis_fails_open_with_local_counters(tmp_path: Path) -> None:
    observer = Observer()
    settings = Lockout(redis_url="redis://127.0.0.1:1/0", fail_mode="open")
    guard = LockoutGuard.from_policy(settings, tmp_path, observer)

    async def main() -> str:
        try:
            return (await guard.check("alice", HOME)).action
        finally:
            await guard.close()

    assert asyncio.run(main()) == "allow"
    assert observer.metrics.registry.get_sample_value(
        "popproxy_redis_errors_total", {"operation": "counts"}) == 1.0
