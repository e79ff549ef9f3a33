#!/usr/bin/env python3
"""Why two workers cost more CPU per login than one on a small box: the worker design, or
two busy processes sharing the CPUs?  (issue 18)

Three layouts serve the same load (16 clients, each: connect, implicit TLS handshake,
USER/PASS, STAT, QUIT, as bench/login_cost.py; the lab Dovecot behind; scanning on, lockout
off, uvloop):

  - ``one``: one ``popproxy run --workers 1``;
  - ``workers2``: one ``popproxy run --workers 2`` (supervisor, two workers, the host's shared
    state: SQLite, the session-slot table);
  - ``two``: two separate ``popproxy run --workers 1``, each with its own port, state_dir and
    8 of the 16 clients: nothing shared between them.

If ``two`` costs what ``workers2`` costs, the extra CPU is the split of the load over two
processes on these CPUs (each process finds its loop empty more often and sleeps and wakes
more per login, its caches cooled by the others), not the supervisor or the shared state.

CPU is utime+stime of each layout's process trees from ``/proc`` (reaped children too) over
``--logins`` logins after 1000 warm-up logins; the layouts run one after another in a shuffled
order per round.

  bench/worker_split.py --rounds 5 --logins 4000

The lab Dovecot must run (``$LAB_DIR/upstream.sh start``), and the lab certificate must exist
(``peers.sh`` makes it).  Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import login_cost as lc
from relay import tree_fields

LAYOUTS = {"one": (1,), "workers2": (2,), "two": (1, 1)}  # the --workers of each process
WARMUP = 1000  # each worker's verdict cache holds every user's listing after it
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) seconds of ``root`` and its descendants, reaped children included
    (``relay.tree_fields``: fields 14-17 of /proc/PID/stat)."""
    user = system = 0
    for fields in tree_fields(root):
        user += int(fields[11]) + int(fields[13])  # utime cutime
        system += int(fields[12]) + int(fields[14])  # stime cstime
    return user / TICK, system / TICK


def start(tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = lc.free_port()
    tmp.mkdir()
    config = tmp / "config.yaml"
    config.write_text(lc.CONFIG.format(port=port, poplab=lc.POPLAB, upstream=lc.UPSTREAM_PORT,
                                       state=tmp / "state"))
    env = dict(os.environ, PYTHONPATH=str(lc.SRC))
    proc = subprocess.Popen(
        [lc.PROXY_PYTHON, "-m", "popproxy", "run", "--config", str(config), "--workers",
         str(workers), "--event-loop", "uvloop"],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lc.wait_port(port, proc)
    return proc, port


async def load(ports: list[int], count: int) -> None:
    """``count`` logins by 16 clients, client i on ``ports[i % len(ports)]``."""
    ctx = ssl.create_default_context(cafile=str(lc.POPLAB / "tls" / "ca.crt"))
    todo = iter(range(count))

    async def client(i: int) -> None:
        for n in todo:
            user, password = lc.USERS[n % len(lc.USERS)]
            await lc.session(ctx, ports[i % len(ports)], user, password)

    await asyncio.gather(*(client(i) for i in range(lc.CLIENTS)))


def measure(layout: str, logins: int) -> tuple[float, float, float]:
    """(user ms, system ms) per login of the layout's processes, and logins per second."""
    with tempfile.TemporaryDirectory(prefix="worker-split-") as tmpdir:
        procs = [start(Path(tmpdir) / str(i), w) for i, w in enumerate(LAYOUTS[layout])]
        try:
            ports = [port for _, port in procs]
            asyncio.run(load(ports, WARMUP))
            time.sleep(0.5)
            before = [cpu_seconds(proc.pid) for proc, _ in procs]
            began = time.monotonic()
            asyncio.run(load(ports, logins))
            elapsed = time.monotonic() - began
            after = [cpu_seconds(proc.pid) for proc, _ in procs]
        finally:
            for proc, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                proc.wait(60)
    user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    system = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return user * 1e3 / logins, system * 1e3 / logins, logins / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--logins", type=int, default=4000, help="measured logins per layout")
    ap.add_argument("--seed", type=int, default=None, help="of the order shuffle")
    a = ap.parse_args()
    order, rng = list(LAYOUTS), random.Random(a.seed)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in LAYOUTS}
    for n in range(a.rounds):
        rng.shuffle(order)
        for layout in order:
            user, system, rate = measure(layout, a.logins)
            results[layout].append((user, system, rate))
            print(f"round {n + 1} {layout:9s} CPU {user + system:.3f} ms/login "
                  f"(user {user:.3f}, sys {system:.3f}), {rate:.0f} logins/s", flush=True)
    print(f"\nmedians of {a.rounds} rounds, {a.logins} logins each "
          f"(load average now {os.getloadavg()[0]:.1f}):")
    print("| layout | CPU ms/login [min, max] | user | sys | logins/s |")
    print("|---|---|---|---|---|")
    for layout, rows in results.items():
        total = [u + s for u, s, _ in rows]
        print(f"| {layout} | {statistics.median(total):.3f} [{min(total):.3f}, {max(total):.3f}]"
              f" | {statistics.median(u for u, _, _ in rows):.3f}"
              f" | {statistics.median(s for _, s, _ in rows):.3f}"
              f" | {statistics.median(r for _, _, r in rows):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
