#!/usr/bin/env python3
"""Interpreter work per TLS login: Python calls (cProfile) or instructions (callgrind).

Both counts are robust to a shared box's noise, unlike wall or CPU time.  One ``popproxy run
--workers 1`` process (scanning on, lockout off, the lab's certificate, as bench/peers.py runs
it) fronts the lab Dovecot; a client process here logs in ``--logins`` times with 16 clients
(connect, implicit TLS handshake, USER/PASS, STAT, QUIT: bench.py's session) after a warm-up
of 200 logins.  Counting is switched on for the measured logins only:

  - ``--tool cprofile``: the proxy runs under ``cProfile``, enabled by SIGUSR2 and dumped by
    the next SIGUSR2; prints calls per login and the functions that make most of them;
  - ``--tool gc``: the cyclic garbage collector's collections per generation, their time
    (wall, in the proxy) and the CPU time of the proxy over the measured logins: objects
    left in reference cycles are freed only by collections, which read them all again;
  - ``--tool callgrind``: the proxy runs under valgrind (``--instr-atstart=no``), switched on
    and off with ``callgrind_control -i``; prints instructions per login, by object (the
    interpreter, libcrypto, libssl, the kernel's vdso, ...).

  POPLAB=/tmp/poplab PORT_OFFSET=0 bench/login_cost.py --tool cprofile --logins 2000
  POPPROXY_SRC=/tmp/base bench/login_cost.py --tool callgrind --logins 300   # another tree

The lab Dovecot must run (``$LAB_DIR/upstream.sh start``), the lab certificate must exist
(``peers.sh`` makes it).  Stdlib only (and valgrind for callgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pstats
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POPLAB = Path(os.environ.get("POPLAB", "/tmp/poplab"))
PORT_OFFSET = int(os.environ.get("PORT_OFFSET", "0"))
UPSTREAM_PORT = 11110 + PORT_OFFSET
SRC = Path(os.environ.get("POPPROXY_SRC", Path(__file__).resolve().parent.parent))
CLIENTS = 16
WARMUP = 200
# The interpreter the proxy runs on: as bench/relay.py (the README install's venv, if any).
PROXY_PYTHON = os.environ.get("POPPROXY_PYTHON") or next(
    (str(p) for p in [Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"]
     if p.exists()), sys.executable)
USERS = [(f"user{i:04d}", f"pass{i:04d}") for i in range(1, 101)]

CONFIG = """\
listeners:
  - {{name: bench-tls, host: 127.0.0.1, port: {port}, mode: tls}}
tls:
  certificates:
    - {{cert: {poplab}/tls/server.crt, key: {poplab}/tls/server.key}}
upstream: {{host: 127.0.0.1, port: {upstream}, mode: plain}}
limits: {{max_sessions: 5000, max_sessions_per_ip: 5000}}
lockout: {{enabled: false}}
state_dir: {state}
demo_upstream: {{enabled: false}}
"""

# Run inside the proxy process: cProfile on/off with SIGUSR2, dumped to argv[1].
PROFILED = """\
import cProfile, signal, sys
sys.argv = ["popproxy"] + sys.argv[2:]
out, prof, on = {out!r}, cProfile.Profile(), [False]
def toggle(signum, frame):
    if on[0]:
        prof.disable(); prof.dump_stats(out)
    else:
        prof.enable()
    on[0] = not on[0]
signal.signal(signal.SIGUSR2, toggle)
from popproxy.cli import main
sys.exit(main())
"""


# Run inside the proxy process: collections counted between two SIGUSR2, printed at the second.
GC_COUNTED = """\
import gc, json, resource, signal, sys, time
runs, spent, at, on = [0, 0, 0], [0.0, 0.0, 0.0], [0.0], []
def collected(phase, info):
    if not on:
        return
    if phase == "start":
        at[0] = time.perf_counter()
    else:
        runs[info["generation"]] += 1
        spent[info["generation"]] += time.perf_counter() - at[0]
def toggle(signum, frame):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    if on:
        print("GC " + json.dumps({{"collections": runs, "seconds": spent,
                                   "cpu": cpu - on.pop()}}), flush=True)
    else:
        on.append(cpu)
gc.callbacks.append(collected)
signal.signal(signal.SIGUSR2, toggle)
sys.argv = ["popproxy"] + sys.argv[2:]
from popproxy.cli import main
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The commands of one session by --steps: each phase's cost is the difference of two runs.
STEPS = {
    "quit": ("QUIT",),
    "login": ("USER", "PASS", "QUIT"),
    "stat": ("USER", "PASS", "STAT", "QUIT"),
}


async def session(ctx: ssl.SSLContext, port: int, user: str, pw: str,
                  steps: tuple[str, ...] = STEPS["stat"]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    args = {"USER": b" " + user.encode(), "PASS": b" " + pw.encode()}
    try:
        for line in (None, *(verb.encode() + args.get(verb, b"") for verb in steps)):
            if line is not None:
                writer.write(line + b"\r\n")
            answer = await reader.readline()
            if not answer.startswith(b"+OK"):
                raise RuntimeError(f"{line!r}: {answer!r}")
    finally:
        writer.close()


async def logins(port: int, count: int, steps: tuple[str, ...] = STEPS["stat"]) -> None:
    ctx = ssl.create_default_context(cafile=str(POPLAB / "tls" / "ca.crt"))
    todo = iter(range(count))

    async def client() -> None:
        for n in todo:
            user, pw = USERS[n % len(USERS)]
            await session(ctx, port, user, pw, steps)

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


def wait_port(port: int, proc: subprocess.Popen[bytes], limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"popproxy exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit("popproxy did not listen")


def start(tool: str, tmp: Path, port: int, event_loop: str, log_level: str,
          floor: str | None = None, workers: int = 1) -> subprocess.Popen[bytes]:
    config = tmp / "config.yaml"
    config.write_text(CONFIG.format(port=port, poplab=POPLAB, upstream=UPSTREAM_PORT,
                                    state=tmp / "state"))
    args = ["run", "--config", str(config), "--workers", str(workers), "--event-loop", event_loop,
            "--log-level", log_level]
    env = dict(os.environ, PYTHONPATH=str(SRC))
    if floor is not None:  # bench/python_floor.py instead of popproxy: the least a relay spends
        pem = tmp / "server.pem"
        pem.write_bytes((POPLAB / "tls" / "server.crt").read_bytes()
                        + (POPLAB / "tls" / "server.key").read_bytes())
        floor_script = str(Path(__file__).resolve().parent / "python_floor.py")
        args = [floor_script, "--port", str(port), "--cert", str(pem), "--upstream",
                str(UPSTREAM_PORT), "--io", floor]
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent)
    if floor is not None and tool == "callgrind":
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={tmp / 'callgrind.out'}", PROXY_PYTHON, *args]
    elif floor is not None:
        sys.exit("--floor: with --tool callgrind only")
    elif tool in ("cprofile", "gc") and workers == 1:
        code = PROFILED.format(out=str(tmp / "prof.out")) if tool == "cprofile" else \
            GC_COUNTED.format()
        cmd = [PROXY_PYTHON, "-c", code, "-", *args]
    elif tool in ("cprofile", "gc"):
        sys.exit("--workers: with --tool callgrind only")
    else:  # the supervisor and every worker, a file each (summed by callgrind_report)
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
               f"--callgrind-out-file={tmp / 'callgrind.out'}.%p", PROXY_PYTHON, "-m",
               "popproxy", *args]
    log = (tmp / "popproxy.log").open("wb")
    # cwd: not the checkout, which `-c` and `-m` would put first on sys.path (POPPROXY_SRC)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)


def cprofile_report(path: Path, n: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"python calls per login: {total / n:.1f} ({total} calls, {n} logins)")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][1])  # type: ignore[attr-defined]
    for (file, line, fn), (_cc, nc, tt, _ct, _callers) in rows[:top]:
        short = re.sub(r".*/(popproxy|asyncio|uvloop|ssl|prometheus_client)/", r"\1/", file)
        print(f"  {nc / n:8.2f}  {tt / n * 1e6:7.1f}us  {short}:{line}({fn})")


def gc_report(log: Path, n: int) -> None:
    line = next(x for x in log.read_text().splitlines() if x.startswith("GC "))
    found = json.loads(line[3:])
    runs, spent = found["collections"], found["seconds"]
    print(f"collections per 1000 logins (gen 0/1/2): "
          f"{' / '.join(f'{r * 1000 / n:.1f}' for r in runs)}; GC time per login: "
          f"{sum(spent) / n * 1e6:.1f} us ({' / '.join(f'{t / n * 1e6:.1f}' for t in spent)}); "
          f"proxy CPU per login: {found['cpu'] / n * 1e3:.3f} ms")


def callgrind_report(path: Path, n: int) -> None:
    """Self cost per object from the callgrind output file (the ``calls=`` lines' next
    line is inclusive cost of a call: skipped)."""
    names: dict[str, str] = {}
    per_object: collections.Counter[str] = collections.Counter()
    obj, skip = "?", False
    per_process: collections.Counter[str] = collections.Counter()
    for out in sorted(path.parent.glob(path.name + "*")):  # one per process with --workers
        names.clear()  # (the compressed names are numbered per file)
        before = sum(per_object.values())
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith(("ob=", "cob=")):  # names are given where first used
                m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line)
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                if line.startswith("ob="):
                    obj = names.get(m.group(1), "?") if m else line[3:]
            elif line.startswith("calls="):
                skip = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip:
                    skip = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    per_object[obj] += int(parts[1])
        cmd = re.search(r"^cmd: .*?popproxy (\w+)", out.read_text(errors="replace"), re.M)
        per_process[f"{cmd.group(1) if cmd else '?'} {out.suffix}"] += \
            sum(per_object.values()) - before
    total = sum(per_object.values())
    print(f"instructions per login: {total / n / 1e6:.3f} M ({total} Ir, {n} logins)")
    busy = {cmd: ir for cmd, ir in per_process.items() if ir}  # (scan pool: idle, no Ir)
    if len(busy) > 1:  # --workers: the supervisor's share, each worker's
        print("  by process: " + ", ".join(f"{ir / n / 1e6:.3f} M ({cmd})"
                                            for cmd, ir in busy.items()))
    for name, ir in per_object.most_common(8):
        print(f"  {ir / n / 1e6:7.3f} M  {Path(name).name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", choices=("cprofile", "gc", "callgrind"), default="cprofile")
    ap.add_argument("--logins", type=int, default=1000)
    ap.add_argument("--event-loop", default="uvloop")
    ap.add_argument("--log-level", default="INFO", help="popproxy's (INFO: the CLI default)")
    ap.add_argument("--top", type=int, default=40, help="cprofile: functions listed")
    ap.add_argument("--steps", choices=tuple(STEPS), default="stat",
                    help="the session's commands after the TLS handshake (default: USER, PASS, "
                    "STAT, QUIT, bench.py's session); a phase costs the difference of two runs")
    ap.add_argument("--floor", choices=("transport", "sockets"), default=None,
                    help="callgrind: measure bench/python_floor.py (--io this) instead: the "
                    "instructions a bare Python TLS relay spends per session")
    ap.add_argument("--workers", type=int, default=1,
                    help="callgrind: popproxy run --workers N (default 1: one process); >1 "
                    "counts the supervisor's and every worker's instructions")
    ap.add_argument("--save", type=Path, default=None, help="keep the profile / callgrind file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="login-cost-") as tmpdir:
        tmp, port = Path(tmpdir), free_port()
        proc = start(a.tool, tmp, port, a.event_loop, a.log_level, a.floor, a.workers)
        try:
            wait_port(port, proc)
            # With workers, each has its own verdict cache in front of the shared SQLite one:
            # enough warm-up logins that each worker has seen every user (100) several times.
            warmup = WARMUP if a.workers == 1 else WARMUP * 5
            asyncio.run(logins(port, warmup, STEPS[a.steps]))
            time.sleep(1.0)
            toggle(a.tool, proc)
            asyncio.run(logins(port, a.logins, STEPS[a.steps]))
            time.sleep(1.0)
            toggle(a.tool, proc)
            time.sleep(2.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        print(f"src: {SRC} ({_imported(tmp)})  python: {PROXY_PYTHON}  event loop: "
              f"{a.event_loop}  log level: {a.log_level}")
        if a.tool == "cprofile":
            cprofile_report(tmp / "prof.out", a.logins, a.top)
        elif a.tool == "gc":
            gc_report(tmp / "popproxy.log", a.logins)
        else:
            callgrind_report(tmp / "callgrind.out", a.logins)
        if a.save is not None:
            name = {"cprofile": "prof.out", "gc": "popproxy.log"}.get(a.tool, "callgrind.out")
            for part in sorted(tmp.glob(name + "*")):  # callgrind: one file per process
                shutil.copy(part, a.save.with_name(a.save.name + part.name[len(name):]))
    return 0


def toggle(tool: str, proc: subprocess.Popen[bytes]) -> None:
    if tool in ("cprofile", "gc"):
        proc.send_signal(signal.SIGUSR2)
    else:
        # This run's processes only (the supervisor and its workers): without a pid,
        # callgrind_control switches every callgrind on the box, another run's too.
        state = "on" if not _on.get(proc.pid) else "off"
        for pid in _process_tree(proc.pid):  # (one not under callgrind: nothing to switch)
            done = subprocess.run(["callgrind_control", "-i", state, str(pid)], check=False,
                                  capture_output=True)
            if pid == proc.pid and done.returncode != 0:
                sys.exit(f"callgrind_control -i {state} {pid}: {done.stderr.decode()}")
        _on[proc.pid] = not _on.get(proc.pid)


_on: dict[int, bool] = {}


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor, its workers and their scan processes)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        todo += [int(c) for c in children.read_text().split()] if children.exists() else []
    return tree


def _imported(tmp: Path) -> str:
    """Which popproxy the proxy ran (its log's first lines name no path: ask Python)."""
    code = "import popproxy; print(popproxy.__file__)"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([PROXY_PYTHON, "-c", code], env=env, cwd=tmp, capture_output=True,
                         text=True, check=False)
    return out.stdout.strip()

if __name__ == "__main__":
    sys.exit(main())
