#!/usr/bin/env python3
"""What a session's host-wide slot costs a worker: ``take`` + ``give_back`` on the shared table
(popproxy/proxy/host_slots.py), alone and with other processes hammering the same table.

Prints, per session (one take and one give back): CPU microseconds (this process, all
threads), Python calls (cProfile), and the wall time of each pair at p50/p99/max, which is what
the event loop is held for; with ``--others N``, N more processes take and give back slots flat
out meanwhile, so the lock is contended as on a busy host.

  bench/host_slots.py [--sessions 20000] [--others 0] [--sources 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from popproxy.proxy.host_slots import SessionSlots
from popproxy.proxy.host_state import DB_FILE, HostShare

MAX_SESSIONS = 1000  # popproxy's default limits.max_sessions
MAX_PER_SOURCE = 50  # and max_sessions_per_ip


def _pair(slots: SessionSlots, source: str) -> None:
    generation = slots.acquire(source, MAX_SESSIONS, MAX_PER_SOURCE)
    if generation is None:
        raise SystemExit("refused: the table is full (should not happen here)")
    slots.give_back(source, generation)


def _hammer(db: str, worker: int, workers: int, stop: multiprocessing.synchronize.Event) -> None:
    slots = SessionSlots(HostShare(Path(db), worker, workers), MAX_SESSIONS)
    n = 0
    while not stop.is_set():
        _pair(slots, f"198.51.100.{n % 200}/32")
        n += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20_000)
    ap.add_argument("--others", type=int, default=0, help="processes hammering the table")
    ap.add_argument("--sources", type=int, default=50, help="distinct source networks")
    ap.add_argument("--workers", type=int, default=2, help="columns (>= 1 + --others)")
    a = ap.parse_args()
    workers = max(a.workers, a.others + 1)
    db = Path(tempfile.mkdtemp(prefix="popproxy-slots-bench-")) / DB_FILE
    slots = SessionSlots(HostShare(db, 0, workers), MAX_SESSIONS)
    sources = [f"10.{n // 256 % 256}.{n % 256}.1/32" for n in range(a.sources)]
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    others = [context.Process(target=_hammer, args=(str(db), w, workers, stop))
              for w in range(1, a.others + 1)]
    for proc in others:
        proc.start()
    time.sleep(1.0 if others else 0)  # let them start hammering
    walls = []
    cpu = time.process_time()
    for n in range(a.sessions):
        start = time.perf_counter()
        _pair(slots, sources[n % len(sources)])
        walls.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    profile = cProfile.Profile()
    profile.enable()
    for n in range(1000):
        _pair(slots, sources[n % len(sources)])
    profile.disable()
    stop.set()
    for proc in others:
        proc.join(10)
    walls.sort()
    calls = sum(entry.callcount for entry in profile.getstats()) / 1000 - 1  # less _pair

    def pct(q: float) -> float:
        return walls[min(len(walls) - 1, int(q * len(walls)))] * 1e6

    print(f"host slots, {a.sessions} sessions, {a.sources} sources, {a.others} other "
          f"processes: CPU {cpu / a.sessions * 1e6:.1f} us/session, {calls:.0f} Python "
          f"calls/session, wall per take+give back p50 {pct(0.5):.1f} us, "
          f"p99 {pct(0.99):.1f} us, max {walls[-1] * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
