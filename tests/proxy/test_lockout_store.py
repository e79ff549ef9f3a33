"""Lockout counter stores: in memory, and the failover in front of Redis.

``RedisStore`` itself needs a Redis server: tests/integration/test_lockout_redis.py runs it.
"""

from __future__ import annotations

import asyncio

import pytest

from popproxy.policy.lockout import Counts, LockoutKeys
from popproxy.proxy.lockout_store import FailoverStore, MemoryStore, StoreUnavailable

KEYS = LockoutKeys(account="a:1", source="s:1", pair="p:1", trusted="t:1")
OTHER = LockoutKeys(account="a:2", source="s:1", pair="p:2", trusted="t:2")  # same network
WINDOW = 3600.0
NOW = 1_000_000.0


def test_memory_counts_failures_per_scope_inside_the_window() -> None:
    async def main() -> None:
        store = MemoryStore()
        assert await store.counts(KEYS, NOW, WINDOW) == Counts(0, 0, 0, False)
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.record_failure(KEYS, "pw1", NOW + 1, WINDOW)  # the same password: once
        await store.record_failure(KEYS, "pw2", NOW + 2, WINDOW)
        await store.record_failure(OTHER, "pw1", NOW + 3, WINDOW)
        assert await store.counts(KEYS, NOW + 4, WINDOW) == Counts(2, 3, 2, False)
        # an hour after the first failures only OTHER's is left in the source counter
        assert await store.counts(KEYS, NOW + 2.5 + WINDOW, WINDOW) == Counts(0, 1, 0, False)

    asyncio.run(main())


def test_memory_success_clears_the_pair_and_trusts_the_network_for_a_while() -> None:
    async def main() -> None:
        store = MemoryStore()
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.record_success(KEYS, NOW + 1, trusted_ttl=100.0)
        assert await store.counts(KEYS, NOW + 2, WINDOW) == Counts(1, 1, 0, True)
        assert await store.counts(KEYS, NOW + 102, WINDOW) == Counts(1, 1, 0, False)

    asyncio.run(main())


def test_memory_store_forgets_empty_counters() -> None:
    async def main() -> int:
        store = MemoryStore()
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        assert store.size() == 3
        await store.counts(KEYS, NOW + 2 * WINDOW, WINDOW)
        return store.size()

    assert asyncio.run(main()) == 0


class BrokenStore:
    """A primary whose every call fails, like a Redis that went away."""

    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts:
        raise ConnectionError("redis down")

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None:
        raise ConnectionError("redis down")

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        raise ConnectionError("redis down")


def test_failover_open_keeps_counting_locally_and_reports_each_error() -> None:
    errors: list[tuple[str, str]] = []

    async def main() -> Counts:
        store = FailoverStore(BrokenStore(), True,
                              lambda op, exc: errors.append((op, type(exc).__name__)))
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.record_success(OTHER, NOW, 0.0)
        return await store.counts(KEYS, NOW, WINDOW)

    assert asyncio.run(main()) == Counts(1, 1, 1, False)
    assert errors == [("record_failure", "ConnectionError"),
                      ("record_success", "ConnectionError"), ("counts", "ConnectionError")]


def test_failover_closed_refuses() -> None:
    async def main() -> None:
        store = FailoverStore(BrokenStore(), False, lambda op, exc: None)
        with pytest.raises(StoreUnavailable, match="counts"):
            await store.counts(KEYS, NOW, WINDOW)

    asyncio.run(main())


def test_failover_uses_the_primary_while_it_works() -> None:
    async def main() -> tuple[Counts, Counts]:
        primary = MemoryStore()
        store = FailoverStore(primary, False, lambda op, exc: None)
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.close()  # MemoryStore has no close(): nothing to release
        return await primary.counts(KEYS, NOW, WINDOW), await store.counts(KEYS, NOW, WINDOW)

    direct, through = asyncio.run(main())
    assert direct == through == Counts(1, 1, 1, False)
