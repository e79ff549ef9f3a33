"""The shared verdict level: what every instance (Redis) or every worker of a host (the host
file, ``store_sqlite.SqliteVerdicts``) reads and writes under the process's own level.

A listing asks for a batch of keys and writes a batch back (``get_many``/``put_many``): one
round trip per batch, whatever the mailbox's size (verdict_cache.VerdictCache).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Protocol

from popproxy.proxy.lockout_store import REDIS_TIMEOUT
from popproxy.proxy.verdict_record import CachedVerdict, from_record, to_record

if TYPE_CHECKING:
    from popproxy.proxy.redis_client import SharedClient

log = logging.getLogger("popproxy.scan")

# Single-key commands only, so no hash tag: verdicts spread over a Redis Cluster's slots.
REDIS_PREFIX = "popproxy:verdict:"


class SharedVerdicts(Protocol):
    """The shared level: ``RedisVerdicts`` (hosts), or ``store_sqlite.SqliteVerdicts`` (the
    workers of one host)."""

    async def get_many(self, keys: list[str]) -> dict[str, CachedVerdict]: ...

    async def put_many(self, items: list[tuple[str, CachedVerdict]]) -> None: ...

    async def delete(self, keys: list[str]) -> None: ...

    async def close(self) -> None: ...


class RedisVerdicts:
    """The shared level: one JSON string per verdict at ``popproxy:verdict:<key>``, with a TTL."""

    def __init__(self, client: SharedClient, ttl: float) -> None:
        """``client``: from ``redis_client.connect`` (one server, Sentinel or Cluster)."""
        self._redis = client
        self._ttl = max(1, int(ttl))

    async def get_many(self, keys: list[str]) -> dict[str, CachedVerdict]:
        """The readable verdicts under ``keys``: one pipelined round trip of single-key GETs."""
        if not keys:
            return {}
        async with asyncio.timeout(REDIS_TIMEOUT * 2):  # bounds reconnects and retries too
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.get(REDIS_PREFIX + key)
            raws = await pipe.execute()
        found: dict[str, CachedVerdict] = {}
        for key, raw in zip(keys, raws, strict=True):
            try:
                if raw is not None:
                    found[key] = from_record(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                # Written by another version, or damaged: judge the message again, overwrite.
                log.warning("unreadable shared verdict %s%s ignored", REDIS_PREFIX, key)
        return found

    async def put_many(self, items: list[tuple[str, CachedVerdict]]) -> None:
        """Write ``items`` in one pipelined round trip of single-key SETs (no transaction)."""
        if not items:
            return
        async with asyncio.timeout(REDIS_TIMEOUT * 2):
            pipe = self._redis.pipeline(transaction=False)
            for key, entry in items:
                pipe.set(REDIS_PREFIX + key, json.dumps(to_record(entry), separators=(",", ":")),
                         ex=self._ttl)
            await pipe.execute()

    async def delete(self, keys: list[str]) -> None:
        async with asyncio.timeout(REDIS_TIMEOUT * 2):
            await self._redis.delete(*(REDIS_PREFIX + key for key in keys))

    async def close(self) -> None:
        await self._redis.aclose()
