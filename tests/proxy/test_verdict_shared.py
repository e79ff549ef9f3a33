"""The shared verdict level's Redis form: batches of single-key commands, bad records skipped.
(Against a real Redis in tests/integration/test_verdict_cache_redis.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from popproxy.proxy.verdict_record import CachedVerdict, to_record
from popproxy.proxy.verdict_shared import REDIS_PREFIX, RedisVerdicts


class FakePipeline:
    def __init__(self, store: dict[str, Any], calls: list[str]) -> None:
        self._store, self._calls = store, calls
        self._queued: list[tuple[str, Any]] = []

    def get(self, key: str) -> None:
        self._queued.append(("get", key))

    def set(self, key: str, value: str, ex: int) -> None:
        self._queued.append(("set", (key, value, ex)))

    async def execute(self) -> list[Any]:
        self._calls.append(f"execute:{len(self._queued)}")
        out: list[Any] = []
        for op, arg in self._queued:
            if op == "get":
                out.append(self._store.get(arg))
            else:
                self._store[arg[0]] = arg[1]
                out.append(True)
        return out


class FakeRedis:
    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.calls: list[str] = []

    def pipeline(self, transaction: bool) -> FakePipeline:
        assert not transaction  # single-key commands: safe across Cluster slots
        return FakePipeline(self.store, self.calls)


def test_a_batch_is_one_round_trip_each_way_and_bad_records_are_skipped() -> None:
    redis = FakeRedis()
    shared = RedisVerdicts(redis, ttl=60)  # type: ignore[arg-type]
    entry = CachedVerdict("pass", 0.0, (), 10, 1.0e9, "gen")

    async def run() -> dict[str, CachedVerdict]:
        await shared.put_many([("a", entry), ("b", entry)])
        redis.store[REDIS_PREFIX + "c"] = "{not json"
        return await shared.get_many(["a", "b", "c", "missing"])

    found = asyncio.run(run())
    assert redis.calls == ["execute:2", "execute:4"]
    assert found == {"a": entry, "b": entry}
    assert json.loads(redis.store[REDIS_PREFIX + "a"]) == to_record(entry)
