"""The host's SQLite store: the lockout semantics of MemoryStore/Redis, shared by processes;
the verdict cache's shared level."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from popproxy.policy.lockout import Counts, LockoutKeys
from popproxy.proxy import store_sqlite
from popproxy.proxy.host_state import connect
from popproxy.proxy.lockout_store import FailoverStore, LockoutStore, MemoryStore, StoreUnavailable
from popproxy.proxy.store_sqlite import SqliteStore, SqliteVerdicts
from popproxy.proxy.verdict_cache import VerdictCache
from popproxy.proxy.verdict_record import CachedVerdict

KEYS = LockoutKeys(account="a:1", source="s:1", pair="p:1", trusted="t:1")
OTHER = LockoutKeys(account="a:2", source="s:1", pair="p:2", trusted="t:2")  # same network
WINDOW = 3600.0
NOW = 1_000_000.0
PER_PROCESS = 150  # failures each of the two concurrent processes records


def _collect(results: list[str]) -> Callable[[str, int], None]:
    """A verdict cache's ``on_result`` that lists each result ``count`` times."""
    return lambda result, count: results.extend([result] * count)


def _stores(tmp_path: Path) -> list[LockoutStore]:
    return [MemoryStore(), SqliteStore(tmp_path / "host.sqlite3")]


@pytest.mark.parametrize("kind", [0, 1], ids=["memory", "sqlite"])
def test_counts_failures_per_scope_inside_the_window_like_memory(tmp_path: Path,
                                                                  kind: int) -> None:
    async def main() -> list[Counts]:
        store = _stores(tmp_path)[kind]
        first = await store.counts(KEYS, NOW, WINDOW)
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.record_failure(KEYS, "pw1", NOW + 1, WINDOW)  # the same password: once
        await store.record_failure(KEYS, "pw2", NOW + 2, WINDOW)
        await store.record_failure(OTHER, "pw1", NOW + 3, WINDOW)
        return [first, await store.counts(KEYS, NOW + 4, WINDOW),
                await store.counts(KEYS, NOW + 2.5 + WINDOW, WINDOW)]

    # an hour after the first failures only OTHER's is left in the source counter
    assert asyncio.run(main()) == [Counts(0, 0, 0, False), Counts(2, 3, 2, False),
                                   Counts(0, 1, 0, False)]


@pytest.mark.parametrize("kind", [0, 1], ids=["memory", "sqlite"])
def test_success_clears_the_pair_and_trusts_the_network_for_a_while(tmp_path: Path,
                                                                     kind: int) -> None:
    async def main() -> list[Counts]:
        store = _stores(tmp_path)[kind]
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        await store.record_success(KEYS, NOW + 1, trusted_ttl=100.0)
        return [await store.counts(KEYS, NOW + 2, WINDOW),
                await store.counts(KEYS, NOW + 102, WINDOW)]

    assert asyncio.run(main()) == [Counts(1, 1, 0, True), Counts(1, 1, 0, False)]


def test_a_second_connection_sees_the_first_ones_counters_and_no_clear_names(
        tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite3"

    async def main() -> Counts:
        await SqliteStore(path).record_failure(KEYS, "pw1", NOW, WINDOW)
        return await SqliteStore(path).counts(KEYS, NOW, WINDOW)

    assert asyncio.run(main()) == Counts(1, 1, 1, False)
    rows = connect(path).execute("SELECT key FROM lockout_hits").fetchall()
    assert sorted(r[0] for r in rows) == ["a:1", "p:1", "s:1"]  # the caller's HMACs, as given


def test_expired_rows_are_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_sqlite, "SWEEP_EVERY", 2)

    async def main() -> tuple[int, int]:
        store = SqliteStore(tmp_path / "host.sqlite3")
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)  # 3 rows
        await store.record_success(OTHER, NOW, trusted_ttl=10.0)  # 1 row, and a sweep
        before = store.size()
        later = NOW + 2 * WINDOW
        await store.record_success(KEYS, later, trusted_ttl=0.0)
        # The second sweep, with the next write: OTHER's marker expired, so it is rewritten
        # (a success with nothing to change writes nothing, and sweeps nothing).
        await store.record_success(OTHER, later, trusted_ttl=10.0)
        return before, store.size()

    assert asyncio.run(main()) == (4, 1)  # only OTHER's new marker is left


def _hammer(path: str, name: str) -> None:
    """In a child process: failures and checks as fast as it can, against the shared file."""
    async def main() -> None:
        store = SqliteStore(Path(path))
        for n in range(PER_PROCESS):
            await store.record_failure(KEYS, f"{name}{n}", NOW + n, WINDOW)
            await store.counts(KEYS, NOW + n, WINDOW)
            await store.record_success(OTHER, NOW + n, 60.0)

    asyncio.run(main())  # an exception (database is locked) makes the exit code non-zero


def test_two_processes_write_at_once_without_locking_errors(tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite3"  # made by the two at once: the schema race included
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_hammer, args=(str(path), name)) for name in ("x", "y")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    counts = asyncio.run(SqliteStore(path).counts(KEYS, NOW + PER_PROCESS, WINDOW))
    assert counts == Counts(2 * PER_PROCESS, 2 * PER_PROCESS, 2 * PER_PROCESS, False)


@pytest.mark.parametrize("fail_open", [True, False], ids=["open", "closed"])
def test_a_locked_file_follows_the_fail_mode_like_redis(tmp_path: Path, fail_open: bool) -> None:
    """Another process holding the write lock past the busy timeout: a store error, counted,
    then local counters (fail_mode open) or a refusal (closed)."""
    path = tmp_path / "host.sqlite3"
    errors: list[tuple[str, str]] = []
    primary = SqliteStore(path)
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")  # a stuck writer

    async def main() -> Counts:
        store = FailoverStore(primary, fail_open,
                              lambda op, exc: errors.append((op, type(exc).__name__)))
        await store.record_failure(KEYS, "pw1", NOW, WINDOW)
        return await store.counts(KEYS, NOW, WINDOW)

    try:
        if fail_open:
            # The failure went to the local counters; reads never wait for a writer in WAL
            # mode, so the check still reads the file (where the failure is missing).
            assert asyncio.run(main()) == Counts(0, 0, 0, False)
        else:
            with pytest.raises(StoreUnavailable, match="record_failure"):
                asyncio.run(main())
    finally:
        holder.execute("ROLLBACK")
    # SQLite's busy timeout (800 ms), or FailoverStore's own (1 s) on a loaded machine.
    assert [op for op, _ in errors] == ["record_failure"]
    assert errors[0][1] in {"OperationalError", "TimeoutError"}


# --------------------------------------------------------------------------- verdicts
def _verdict(size: int, scanned_at: float = NOW) -> CachedVerdict:
    return CachedVerdict("defang", 7.0, ("link-feed-host",), size, scanned_at, "gen")


class Wall:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_verdicts_round_trip_one_by_one_and_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite3"

    async def main() -> None:
        one, other = SqliteVerdicts(path, 60.0), SqliteVerdicts(path, 60.0)
        await one.put("k0", _verdict(100))
        await one.put_many({f"k{n}": _verdict(100 + n) for n in range(1, 1200)}.items())
        assert await other.get("k0") == _verdict(100)
        assert await other.get("nope") is None
        wanted = [f"k{n}" for n in range(0, 1300, 7)]  # more keys than one statement takes
        found = await other.get_many(wanted)
        assert found == {k: _verdict(100 + int(k[1:])) for k in wanted if int(k[1:]) < 1200}
        await other.delete(["k0", "k7"])
        assert await one.get_many(["k0", "k7", "k14"]) == {"k14": _verdict(114)}
        await one.close()
        await other.close()

    asyncio.run(main())


def test_verdicts_expire_and_unreadable_rows_are_ignored(tmp_path: Path) -> None:
    path, wall = tmp_path / "host.sqlite3", Wall()

    async def main() -> None:
        shared = SqliteVerdicts(path, 60.0, wall)
        await shared.put("old", _verdict(1))
        wall.now += 61
        await shared.put("new", _verdict(2))
        db = connect(path)
        db.execute("INSERT INTO verdicts VALUES ('bad', '{\"action\": 1', ?)", (wall.now + 60,))
        assert await shared.get_many(["old", "new", "bad"]) == {"new": _verdict(2)}
        await shared.close()

    asyncio.run(main())


def test_verdict_rows_hold_the_record_not_the_user(tmp_path: Path) -> None:
    path = tmp_path / "host.sqlite3"

    async def main() -> None:
        shared = SqliteVerdicts(path, 60.0)
        await shared.put("hash-of-key", _verdict(5))
        await shared.close()

    asyncio.run(main())
    ((key, value),) = connect(path).execute("SELECT key, value FROM verdicts").fetchall()
    assert key == "hash-of-key" and json.loads(value)["size"] == 5


def test_a_closed_verdict_store_raises_a_sqlite_error(tmp_path: Path) -> None:
    """The verdict cache counts any exception of its shared level as shared_error."""
    async def main() -> None:
        shared = SqliteVerdicts(tmp_path / "host.sqlite3", 60.0)
        shared._db.close()
        with pytest.raises(sqlite3.ProgrammingError):
            await shared.get("k")

    asyncio.run(main())


def test_the_verdict_cache_of_one_worker_serves_another_through_the_file(
        tmp_path: Path) -> None:
    """Two workers' caches, memory only, with the host's file as their shared level."""
    path = tmp_path / "host.sqlite3"
    results: list[str] = []

    async def main() -> tuple[CachedVerdict | None, CachedVerdict | None]:
        a = VerdictCache(None, SqliteVerdicts(path, 60.0), _collect(results))
        b = VerdictCache(None, SqliteVerdicts(path, 60.0), _collect(results))
        await a.store("k", _verdict(42))
        served = await b.lookup("k", "gen")
        await a.forget("", set())  # nothing listed for mailbox "": nothing to drop
        broken = VerdictCache(None, SqliteVerdicts(path, 60.0), _collect(results))
        connect(path).execute("DROP TABLE verdicts")  # every verdict call now fails
        missed = await broken.lookup("k", "gen")  # the file cannot answer: judged here
        for cache in (a, b, broken):
            await cache.close()
        return served, missed

    assert asyncio.run(main()) == (_verdict(42), None)
    assert results == ["shared_hit", "shared_error"]
    assert not list(tmp_path.glob("*.jsonl"))


def test_a_steady_good_login_writes_nothing_until_the_marker_ages(tmp_path: Path) -> None:
    """issue 18: the trusted marker is rewritten once it has used TRUSTED_REFRESH_FRACTION of
    its TTL, not at every login; a failure of the pair is always cleared."""
    ttl = 1000.0
    store = SqliteStore(tmp_path / "host.sqlite3")
    writes: list[str] = []
    store._writer.set_trace_callback(
        lambda sql: writes.append(sql) if sql.startswith("BEGIN") else None)

    def until() -> float:
        return float(connect(tmp_path / "host.sqlite3").execute(
            "SELECT until FROM lockout_trusted WHERE key = ?", (KEYS.trusted,)).fetchone()[0])

    async def main() -> list[float]:
        seen = []
        await store.record_success(KEYS, NOW, ttl)  # no marker yet: written
        seen.append(until())
        fresh = NOW + ttl * store_sqlite.TRUSTED_REFRESH_FRACTION * 0.9
        await store.record_success(KEYS, fresh, ttl)  # fresh marker, no failure: nothing
        seen.append(until())
        await store.record_failure(KEYS, "pw1", fresh, WINDOW)
        await store.record_success(KEYS, fresh, ttl)  # a failure to clear: written
        seen.append(until())
        aged = fresh + ttl * store_sqlite.TRUSTED_REFRESH_FRACTION * 1.1
        await store.record_success(KEYS, aged, ttl)  # the marker aged: rewritten
        seen.append(until())
        await store.record_success(OTHER, aged, 0.0)  # trusting off: nothing to write
        return seen

    fresh = NOW + ttl * store_sqlite.TRUSTED_REFRESH_FRACTION * 0.9
    aged = fresh + ttl * store_sqlite.TRUSTED_REFRESH_FRACTION * 1.1
    assert asyncio.run(main()) == [NOW + ttl, NOW + ttl, fresh + ttl, aged + ttl]
    assert len(writes) == 4  # success, failure, success clearing it, success re-marking
    assert asyncio.run(store.counts(KEYS, aged, WINDOW)) == Counts(1, 1, 0, True)


def test_a_reload_that_shortens_trusted_ttl_shortens_an_active_users_marker(
        tmp_path: Path) -> None:
    """Regression (review): a marker written under trusted_ttl 30 days was left as it was by
    the logins after a reload to 1 hour: the user stayed trusted for 30 days."""
    old_ttl, new_ttl = 30 * 86400.0, 3600.0
    store = SqliteStore(tmp_path / "host.sqlite3")

    async def main() -> None:
        await store.record_success(KEYS, NOW, old_ttl)
        await store.record_success(KEYS, NOW + 1, new_ttl)  # the next login, after the reload

    asyncio.run(main())
    until = connect(tmp_path / "host.sqlite3").execute(
        "SELECT until FROM lockout_trusted WHERE key = ?", (KEYS.trusted,)).fetchone()[0]
    assert until == NOW + 1 + new_ttl
