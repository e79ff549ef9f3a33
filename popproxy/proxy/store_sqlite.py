"""Lockout counters and shared verdicts in the host's SQLite file (:mod:`host_state`).

``SqliteStore`` is a :class:`~popproxy.proxy.lockout_store.LockoutStore` with the semantics of
``MemoryStore`` and ``RedisStore``: per key, a set of members scored by the time of their last
failure, counted inside the sliding window; a success clears the pair and marks the network
trusted for ``trusted_ttl`` (rewriting a marker only once it has used TRUSTED_REFRESH_FRACTION
of its TTL, so a steady-state good login writes nothing).  Keys are the same HMACs as in Redis.
Reads (``counts``) run on the event loop: one indexed statement, and in WAL mode a reader never
waits for a writer.  Writes run in a thread of their own, on a second connection: a write waits
for the other workers' writes (SQLite's busy handler sleeps 1, 2, 5, 10... ms between tries) and
for the file system, and on the loop that wait would stall every session of the worker.
bench/host_store.py (a second process writing flat out) measured the loop's lag at p99 22 to 61
ms with the writes on the loop, 3.5 to 8.6 ms with them in the thread, the same as with no store
at all on that (busy, shared) machine; ``counts`` holds the loop 0.14 to 0.22 ms at p99.

``SqliteVerdicts`` is the verdict cache's shared level (the interface of ``RedisVerdicts``,
plus ``get_many``/``put_many``).  A listing may look up thousands of verdicts at once, so its
calls run in one thread of their own and never hold the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from popproxy.policy.lockout import (
    TRUSTED_REFRESH_FRACTION,
    Counts,
    LockoutKeys,
    marker_is_fresh,
    members,
)
from popproxy.proxy.host_state import READ_BUSY_TIMEOUT_MS, connect, write
from popproxy.proxy.verdict_record import CachedVerdict, from_record, to_record

log = logging.getLogger("popproxy.host")

T = TypeVar("T")
# TRUSTED_REFRESH_FRACTION: the rule is policy/lockout.py's (Redis follows it too).
__all__ = ["TRUSTED_REFRESH_FRACTION", "SqliteStore", "SqliteVerdicts"]

# Rows of counters no login touches any more are deleted every this many writes (Redis has
# a TTL per key for that; the memory store prunes as keys are touched).
SWEEP_EVERY = 1000
# Keys per statement in the batch calls: under SQLite's host-parameter limit (999 before 3.32).
BATCH = 500


class SqliteStore:
    """Lockout counters shared by the workers of one host."""

    def __init__(self, db_path: Path) -> None:
        self._db = connect(db_path, READ_BUSY_TIMEOUT_MS)  # reads, on the loop
        self._writer = connect(db_path)  # writes, in self._thread only
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="popproxy-lockout-db")
        self._writes = 0

    async def _write(self, call: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts:
        since = now - window
        found = dict(self._db.execute(
            "SELECT key, count(*) FROM lockout_hits WHERE key IN (?, ?, ?) AND at >= ? "
            "GROUP BY key", (keys.account, keys.source, keys.pair, since)).fetchall())
        trusted = self._db.execute(
            "SELECT 1 FROM lockout_trusted WHERE key = ? AND until > ?",
            (keys.trusted, now)).fetchone() is not None
        return Counts(found.get(keys.account, 0), found.get(keys.source, 0),
                      found.get(keys.pair, 0), trusted)

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None:
        await self._write(lambda: self._record_failure(keys, tag, now, window))

    def _record_failure(self, keys: LockoutKeys, tag: str, now: float, window: float) -> None:
        with write(self._writer):
            for key, member in members(keys, tag).items():
                self._writer.execute(
                    "INSERT INTO lockout_hits VALUES (?, ?, ?, ?) ON CONFLICT (key, member) "
                    "DO UPDATE SET at = excluded.at, expires = excluded.expires",
                    (key, member, now, now + window))
                self._writer.execute("DELETE FROM lockout_hits WHERE key = ? AND at < ?",
                                     (key, now - window))
            self._sweep(now)

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        if not self._success_changes(keys, now, trusted_ttl):
            return
        await self._write(lambda: self._record_success(keys, now, trusted_ttl))

    def _success_changes(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> bool:
        """Whether a success has anything to write: a failure of the pair to clear, or a
        trusted marker missing or older than TRUSTED_REFRESH_FRACTION of its TTL.  One read
        on the loop, like ``counts``."""
        until, hits = self._db.execute(
            "SELECT (SELECT until FROM lockout_trusted WHERE key = ?), "
            "EXISTS (SELECT 1 FROM lockout_hits WHERE key = ?)",
            (keys.trusted, keys.pair)).fetchone()
        return bool(hits) or not marker_is_fresh(None if until is None else until - now,
                                                  trusted_ttl)

    def _record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        with write(self._writer):
            self._writer.execute("DELETE FROM lockout_hits WHERE key = ?", (keys.pair,))
            if trusted_ttl > 0:
                self._writer.execute("INSERT OR REPLACE INTO lockout_trusted VALUES (?, ?)",
                                     (keys.trusted, now + trusted_ttl))
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY:
            return
        self._writer.execute("DELETE FROM lockout_hits WHERE expires < ?", (now,))
        self._writer.execute("DELETE FROM lockout_trusted WHERE until <= ?", (now,))

    def size(self) -> int:
        """Rows held (tests)."""
        hits = self._db.execute("SELECT count(*) FROM lockout_hits").fetchone()[0]
        trusted = self._db.execute("SELECT count(*) FROM lockout_trusted").fetchone()[0]
        return int(hits) + int(trusted)

    async def close(self) -> None:
        await self._write(self._writer.close)
        self._thread.shutdown(wait=False)
        self._db.close()


def _decode(key: str, raw: str) -> CachedVerdict | None:
    try:
        return from_record(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        # Written by another version, or damaged: judge the message again and overwrite.
        log.warning("unreadable shared verdict %s ignored", key)
        return None


def _encode(entry: CachedVerdict) -> str:
    return json.dumps(to_record(entry), separators=(",", ":"))


class SqliteVerdicts:
    """The verdict cache's shared level on one host: one row per verdict, with an expiry."""

    def __init__(self, db_path: Path, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = connect(db_path)
        self._ttl = ttl
        self._clock = clock
        self._writes = 0
        # One thread: the connection is used by it alone, and calls keep their order.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="popproxy-verdict-db")

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def get(self, key: str) -> CachedVerdict | None:
        return (await self.get_many([key])).get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, CachedVerdict]:
        """The live verdicts among ``keys`` (missing and expired ones are left out)."""
        return await self._run(lambda: self._get_many(list(keys)))

    def _get_many(self, keys: list[str]) -> dict[str, CachedVerdict]:
        found: dict[str, CachedVerdict] = {}
        now = self._clock()
        for start in range(0, len(keys), BATCH):
            chunk = keys[start:start + BATCH]
            marks = ", ".join("?" * len(chunk))
            for key, raw in self._db.execute(
                    f"SELECT key, value FROM verdicts WHERE key IN ({marks}) AND expires > ?",
                    (*chunk, now)):
                entry = _decode(key, raw)
                if entry is not None:
                    found[key] = entry
        return found

    async def put(self, key: str, entry: CachedVerdict) -> None:
        await self.put_many([(key, entry)])

    async def put_many(self, items: Iterable[tuple[str, CachedVerdict]]) -> None:
        """Store (key, verdict) pairs in one transaction; ``dict.items()`` fits."""
        rows = [(key, _encode(entry)) for key, entry in items]
        await self._run(lambda: self._put_many(rows))

    def _put_many(self, rows: list[tuple[str, str]]) -> None:
        now = self._clock()
        with write(self._db):
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
                                 [(key, value, now + self._ttl) for key, value in rows])
            self._writes += len(rows)
            if self._writes >= SWEEP_EVERY:
                self._writes = 0
                self._db.execute("DELETE FROM verdicts WHERE expires <= ?", (now,))

    async def delete(self, keys: list[str]) -> None:
        await self._run(lambda: self._delete(keys))

    def _delete(self, keys: list[str]) -> None:
        with write(self._db):
            self._db.executemany("DELETE FROM verdicts WHERE key = ?", [(k,) for k in keys])

    async def close(self) -> None:
        try:
            await self._run(self._db.close)
        except sqlite3.Error as exc:  # closing at shutdown: nothing left to lose
            log.debug("verdict db close: %s", exc)
        self._thread.shutdown(wait=False)
