#!/usr/bin/env python3
"""Memory per slow reader of a big defanged message (issue 14, medium 4).

Starts an in-process demo upstream holding one big phishing message (``--mb``, 15 by default)
and ``popproxy run`` (this checkout, or ``--reference DIR`` beside it) with thresholds that
defang it.  ``--clients`` clients (10) log in, LIST (the message is judged and rendered), then
RETR it with a small receive buffer, reading ``--rate`` KB/s (1).  The proxy's RSS is read
from /proc before the RETRs and after ``--seconds`` (20) of slow reading; the growth divided by
the clients is the memory each slow reader holds.

Run: ``python bench/slow_readers.py [--reference DIR] [--clients 10] [--mb 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox  # noqa: E402


def phishing(megabytes: int) -> bytes:
    filler = (b"<p>" + b"words " * 12 + b"</p>\r\n") * (megabytes * 1024 * 1024 // 82)
    return (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
            b"Content-Type: text/html\r\n\r\n"
            b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n' + filler)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    data = b""
    while not data.endswith(b"\r\n"):
        data += sock.recv(1)
    return data


def read_multiline(sock: socket.socket) -> None:
    data = b""
    while not data.endswith(b"\r\n.\r\n"):
        data = (data + sock.recv(65536))[-8:]


def client(port: int, ready: threading.Barrier, go: threading.Event, rate: int,
           stop: threading.Event) -> None:
    sock = socket.create_connection(("127.0.0.1", port), 600)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.recv(512)
    command(sock, b"USER u")
    command(sock, b"PASS p")
    command(sock, b"LIST")
    read_multiline(sock)
    ready.wait()
    go.wait()
    sock.sendall(b"RETR 1\r\n")
    while not stop.is_set():
        sock.recv(1024)
        time.sleep(1 / rate)
    sock.close()


def measure(tree: Path, args: argparse.Namespace, upstream_port: int) -> tuple[int, int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        config = Path(state) / "policy.yaml"
        config.write_text(f"""
listeners: [{{name: p, host: 127.0.0.1, port: {port}, mode: plain,
              allow_plaintext_login: true}}]
state_dir: {state}
upstream: {{host: 127.0.0.1, port: {upstream_port}, mode: plain, response_timeout: 600}}
limits: {{auth_failure_delay: 0}}
lockout: {{enabled: false}}
scan: {{enabled: true, max_message_bytes: {64 * 1024 * 1024}, time_budget: 120,
        thresholds: {{tag: 0.5, defang: 0.6, quarantine: 99}}}}
""")
        env = {**os.environ, "PYTHONPATH": str(tree)}
        proc = subprocess.Popen([sys.executable, "-m", "popproxy", "run", "--config",
                                 str(config)], env=env, cwd=tree,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            ready = threading.Barrier(args.clients + 1)
            go, stop = threading.Event(), threading.Event()
            threads = [threading.Thread(target=client, args=(port, ready, go, args.rate, stop))
                       for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            ready.wait()
            time.sleep(1)
            before = rss_kib(proc.pid)
            go.set()
            time.sleep(args.seconds)
            during = rss_kib(proc.pid)
            stop.set()
            for thread in threads:
                thread.join(30)
            return before, during
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--mb", type=int, default=15)
    parser.add_argument("--rate", type=int, default=1, help="KB/s per client")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    demo = DemoUpstream({b"u": Mailbox(b"p", [phishing(args.mb)])})
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(demo.start(), loop).result(30)
    trees = [("this checkout", REPO)] + ([("reference", args.reference)] if args.reference
                                         else [])
    print(f"{args.clients} clients, RETR of a {args.mb} MB defanged message at {args.rate} "
          f"KB/s, RSS after {args.seconds:g} s")
    print("| tree | RSS before MiB | RSS during MiB | growth per reader MiB |")
    print("|---|---|---|---|")
    for name, tree in trees:
        before, during = measure(tree, args, demo.port)
        per = (during - before) / 1024 / args.clients
        print(f"| {name} | {before / 1024:.1f} | {during / 1024:.1f} | {per:.2f} |")


if __name__ == "__main__":
    main()
