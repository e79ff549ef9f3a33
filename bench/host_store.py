"""How long the host's SQLite lockout store holds the event loop, under a second worker's load.

    PYTHONPATH=$PWD python3 bench/host_store.py [--logins 5000] [--store sqlite|memory]

A login makes one ``counts`` (a read, on the loop) and one ``record_failure`` or
``record_success`` (a write, in the store's thread: store_sqlite's docstring).  This process
runs --logins logins back to back (a tenth of them failures, each login with new keys, so the
table grows) while a second process (the other worker) does the same, without pause, against
the same file, and, unless --no-verdicts, a third writes verdicts in batches of 100 (a
listing) all along.  Beside the logins a probe task yields to the loop without pause and
records the gaps between its turns: per login, the longest stretch for which no other session
could run ("loop stall").  ``--store memory`` gives the noise floor of this machine (the same logins
against MemoryStore, no file, the same load processes).  ``--inline`` runs the writes on the
loop, as a first version did.  Printed: per call kind and for the loop gaps, p50/p99/p99.9/max
in ms.  The load is harsher than two workers' real one: they spend most of a login on TLS and
the upstream, not on the store.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

from popproxy.policy.lockout import LockoutKeys
from popproxy.proxy.host_state import DB_FILE, connect
from popproxy.proxy.lockout_store import LockoutStore, MemoryStore
from popproxy.proxy.store_sqlite import SqliteStore, SqliteVerdicts
from popproxy.proxy.verdict_record import CachedVerdict

WINDOW = 3600.0
VERDICT_BATCH = 100
PROBE_INTERVAL = 0.001  # seconds between the loop-lag probe's timers


def _keys(n: int, worker: str) -> LockoutKeys:
    return LockoutKeys(account=f"a:{worker}{n % 500}", source=f"s:{worker}{n % 300}",
                       pair=f"p:{worker}{n}", trusted=f"t:{worker}{n % 500}")


def _store(kind: str, path: Path, inline: bool) -> LockoutStore:
    if kind == "memory":
        return MemoryStore()
    store = SqliteStore(path)
    if inline:  # the writes on the loop, on the writer connection, without the thread
        async def failure(keys: LockoutKeys, tag: str, now: float, window: float) -> None:
            store._record_failure(keys, tag, now, window)

        async def success(keys: LockoutKeys, now: float, ttl: float) -> None:
            store._record_success(keys, now, ttl)

        vars(store).update(record_failure=failure, record_success=success)
    return store


async def _logins(store: LockoutStore, count: int, worker: str,
                  timings: dict[str, list[float]] | None, rate: float = 0.0) -> None:
    """``rate``: logins started per second (0: back to back, yielding between logins)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(count):
        keys, now = _keys(n, worker), time.time()
        started = time.perf_counter()
        await store.counts(keys, now, WINDOW)
        middle = time.perf_counter()
        if n % 10 == 0:
            kind = "record_failure"
            await store.record_failure(keys, f"tag{n}", now, WINDOW)
        else:
            kind = "record_success"
            await store.record_success(keys, now, 86400.0)
        if timings is not None:
            timings.setdefault("counts", []).append((middle - started) * 1000)
            timings.setdefault(kind, []).append((time.perf_counter() - middle) * 1000)
        # A real login waits for the network between its calls: the loop sleeps or serves others.
        await asyncio.sleep(max(0.0, start + (n + 1) / rate - loop.time()) if rate else 0)


async def _measured(store: LockoutStore, count: int, rate: float) -> dict[str, list[float]]:
    """The logins' call times, and the loop's lag: how late a 1 ms timer fires, all along
    (the usual event-loop-lag probe: a blocked loop fires it late)."""
    timings: dict[str, list[float]] = {}
    lags: list[float] = []
    done = False
    loop = asyncio.get_running_loop()

    async def probe() -> None:
        while not done:
            due = loop.time() + PROBE_INTERVAL
            await asyncio.sleep(PROBE_INTERVAL)
            lags.append(max(0.0, loop.time() - due) * 1000)

    task = asyncio.ensure_future(probe())
    await _logins(store, count, "m", timings, rate)
    done = True
    await task
    timings["loop lag"] = lags
    return timings


def _load(path: str, stop_at: float) -> None:
    """The other worker: logins without pause until ``stop_at``."""
    async def main() -> None:
        n = 0
        while time.time() < stop_at:
            store = SqliteStore(Path(path))
            await _logins(store, 200, f"w{n}-", None)
            await store.close()
            n += 1

    asyncio.run(main())


def _listings(path: str, stop_at: float) -> None:
    """Verdicts written in batches, as listings do, until ``stop_at``."""
    async def main() -> None:
        shared, n = SqliteVerdicts(Path(path), 86400.0), 0
        entry = CachedVerdict("pass", 0.0, (), 4096, time.time(), "gen")
        while time.time() < stop_at:
            await shared.put_many([(f"v{n}-{i}", entry) for i in range(VERDICT_BATCH)])
            n += 1
        await shared.close()

    asyncio.run(main())


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logins", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--no-verdicts", action="store_true")
    parser.add_argument("--no-load", action="store_true", help="no other process at all")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="logins per second in the measured worker (the load runs flat out)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--inline", action="store_true")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="host-store-"))
    path = directory / DB_FILE
    connect(path).close()
    stop_at = time.time() + 600
    spawn = multiprocessing.get_context("spawn")
    others = [] if args.no_load else [
        spawn.Process(target=_load, args=(str(path), stop_at), daemon=True)]
    if not args.no_verdicts and not args.no_load:
        others.append(spawn.Process(target=_listings, args=(str(path), stop_at), daemon=True))
    for proc in others:
        proc.start()
    time.sleep(1.0)  # the load is running
    timings = asyncio.run(_measured(_store(args.store, path, args.inline), args.logins,
                                    args.rate))
    for proc in others:
        proc.terminate()
        proc.join()
    where = "memory" if args.store == "memory" else f"{path}" + (
        " (writes inline)" if args.inline else " (writes in a thread)")
    load = "none" if args.no_load else "1 worker's logins" + (
        "" if args.no_verdicts else f" + verdict batches of {VERDICT_BATCH}")
    print(f"{args.logins} logins against {where}, load: {load}")
    print(f"{'call':16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    for kind, values in sorted(timings.items()):
        print(f"{kind:16} {len(values):6d} {_percentile(values, 0.5):8.3f} "
              f"{_percentile(values, 0.99):8.3f} {_percentile(values, 0.999):9.3f} "
              f"{max(values):8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
