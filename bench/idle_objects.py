#!/usr/bin/env python3
"""Where an idle authenticated TLS session's Python memory goes (issue 18 item 6).

Runs a ``ProxyServer`` in this process (an implicit-TLS listener in front of the lab Dovecot,
scanning on, lockouts off: as bench/peers.py configures it), logs N clients in from a child
process (``userNNNN`` over TLS, then nothing: idle), and prints per session:

  - the growth of Python allocations (tracemalloc, taken after a warm-up so one-time caches
    do not count) by allocation site;
  - the objects allocated since the warm-up, by type (``sys.getsizeof``, found through
    ``gc.get_objects`` and their referents, so bytes/str/int without GC headers count too);
  - the process's RSS growth with the same sessions, measured first, without tracemalloc,
    for scale (RSS, not PSS: bench/peers.py's ``idle`` row is the reference).

tracemalloc sees only Python's allocations: OpenSSL's (the ``SSL`` structure, its buffers, the
session, about 15-16 KiB per TLS connection, bench/README.md "Idle memory") and libuv's are
outside it and appear only in the RSS line.  The proxy process here also holds the clients'
nothing (they live in the child), so every figure is the proxy's.

  POPLAB=/tmp/poplab-b PORT_OFFSET=1500 python3 bench/idle_objects.py --idle 300 --loop uvloop

Needs the lab Dovecot (``upstream.sh start``) and the lab certificate (``peers.sh certs``).
Stdlib only (and popproxy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay import POPLAB, UPSTREAM_PORT  # bench/relay.py: the lab's paths and ports

from popproxy.policy.loader import load_config
from popproxy.proxy.server import ProxyServer

CONFIG = """\
listeners:
  - {{name: idle-tls, host: 127.0.0.1, port: 1, mode: tls}}
tls:
  certificates:
    - {{cert: {tls}/server.crt, key: {tls}/server.key}}
upstream: {{host: 127.0.0.1, port: {upstream}, mode: plain, response_timeout: 120}}
limits: {{idle_timeout: 600, max_sessions: {cap}, max_sessions_per_ip: {cap}}}
lockout: {{enabled: false}}
state_dir: {state}
demo_upstream: {{enabled: false}}
"""
# The child: N TLS logins (the users in turn, as the lab's bench.py), then idle until stdin closes.
CLIENTS = textwrap.dedent("""\
    import poplib, ssl, sys
    USERS = 100  # the lab's user0001..user0100; Dovecot allows 10 sessions per user and IP
    port, n, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ctx = ssl.create_default_context(cafile=sys.argv[4])
    held = []
    for i in range(n):
        u = (first + i) % USERS + 1
        c = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
        c.user(f"user{u:04d}"); c.pass_(f"pass{u:04d}")
        held.append(c)
    print("ready", flush=True)
    sys.stdin.read()
""")
WARM_UP = 20  # sessions opened and closed first: caches, metric children, upstream CAPA
SETTLE_S = 1.0  # after the last login: the sessions' tasks reach their idle read


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def open_clients(port: int, n: int, first: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENTS, str(port), str(n), str(first),
         str(POPLAB / "tls" / "ca.crt")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    if line.strip() != "ready":
        raise SystemExit(f"clients failed (exit {child.wait()})")
    await asyncio.sleep(SETTLE_S)
    return child


def close_clients(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait()


def new_objects() -> list[Any]:
    """Objects allocated since tracemalloc started: GC-tracked ones and what they refer to."""
    seen: dict[int, Any] = {}
    tracked = gc.get_objects()
    seen[id(tracked)] = seen[id(seen)] = None  # this walk's own: not the sessions'
    for obj in tracked:
        for o in (obj, *gc.get_referents(obj)):
            if id(o) not in seen and tracemalloc.get_object_traceback(o) is not None:
                seen[id(o)] = o
    return [o for o in seen.values() if o is not None]


def by_type(objects: list[Any]) -> Counter[str]:
    sizes: Counter[str] = Counter()
    for o in objects:
        sizes[type(o).__qualname__] += sys.getsizeof(o)
    return sizes


def detail(objects: list[Any], name: str, n: int, top: int) -> None:
    """Where the objects of type ``name`` were allocated, outermost call first (needs
    ``--frames`` > 1 to see through asyncio's and uvloop's own frames)."""
    sites: Counter[str] = Counter()
    for o in objects:
        if type(o).__qualname__ == name:
            tb = tracemalloc.get_object_traceback(o)
            where = " > ".join(f"{Path(f.filename).name}:{f.lineno}" for f in tb or ())
            sites[f"len={len(o) if hasattr(o, '__len__') else '-'} at {where}"] += 1
    print(f"\n{name} objects per session, by allocation site:")
    for where, count in sites.most_common(top):
        print(f"  {count / n:5.2f}  {where}")


def report(n: int, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
           objects: list[Any], rss: int, top: int) -> None:
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"{n} idle TLS sessions: Python allocations {total / n / 1024:.2f} KiB/session "
          f"(tracemalloc); RSS {rss / n:.2f} KiB/session (before tracemalloc: with OpenSSL, libuv, "
          "the allocator)")
    print(f"\ntop allocation sites, bytes/session (of {total / n:.0f}):")
    for s in stats[:top]:
        frame = s.traceback[0]
        print(f"  {s.size_diff / n:7.0f}  {s.count_diff / n:5.2f} blocks  "
              f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
    sizes = by_type(objects)
    print(f"\nobjects allocated since the warm-up, by type, bytes/session "
          f"(sys.getsizeof; {sum(sizes.values()) / n:.0f} in all):")
    for name, size in sizes.most_common(top):
        count = sum(1 for o in objects if type(o).__qualname__ == name)
        print(f"  {size / n:7.0f}  {count / n:5.2f} objects  {name}")


async def rss_growth(port: int, n: int) -> int:
    """KiB the process grows by with ``n`` idle sessions (then closed again)."""
    gc.collect()
    before = rss_kib()
    child = await open_clients(port, n, 0)
    gc.collect()
    grown = rss_kib() - before
    close_clients(child)
    await asyncio.sleep(SETTLE_S)
    return grown


async def measure(a: argparse.Namespace, state: Path) -> None:
    path = state / "policy.yaml"
    path.write_text(CONFIG.format(tls=POPLAB / "tls", upstream=a.upstream_port,
                                  cap=2 * a.idle + WARM_UP, state=state))
    server = ProxyServer(load_config(path))
    await server.start({"idle-tls": 0})
    port = server.ports["idle-tls"]
    try:
        close_clients(await open_clients(port, WARM_UP, 0))
        await asyncio.sleep(SETTLE_S)
        rss = await rss_growth(port, a.idle)  # first, without tracemalloc's own tables
        gc.collect()
        tracemalloc.start(a.frames)
        before = tracemalloc.take_snapshot()
        child = await open_clients(port, a.idle, 0)
        gc.collect()
        after = tracemalloc.take_snapshot()
        if server.session_count < a.idle:
            print(f"warning: {server.session_count} sessions of {a.idle}", file=sys.stderr)
        objects = new_objects()
        report(a.idle, before, after, objects, rss, a.top)
        for name in a.detail:
            detail(objects, name, a.idle, a.top)
        tracemalloc.stop()
        close_clients(child)
    finally:
        await server.stop(grace=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=300, help="idle sessions (default 300)")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    ap.add_argument("--upstream-port", type=int, default=UPSTREAM_PORT)
    ap.add_argument("--top", type=int, default=25, help="rows per table")
    ap.add_argument("--frames", type=int, default=1, help="tracemalloc traceback depth")
    ap.add_argument("--detail", action="append", default=[], metavar="TYPE",
                    help="also list where objects of TYPE were allocated (repeatable)")
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("POPPROXY_WORKERS", "1")
    with tempfile.TemporaryDirectory(prefix="idle-objects-") as tmp:
        if a.loop == "uvloop":
            import uvloop
            uvloop.run(measure(a, Path(tmp)))
        else:
            asyncio.run(measure(a, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
