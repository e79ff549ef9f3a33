"""``popproxy run --workers N`` as a child process, and which worker serves which connection.

The kernel hashes each connection to one of the workers (each has its own listening socket on
the port, SO_REUSEPORT), so tests that need "a session on worker A and one on worker B" look
the connection up: the proxy-side socket of a client connection is found in ``/proc/net/tcp``
by the client's port, and the worker holding that socket by its inode in ``/proc/<pid>/fd``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration import prom
from tests.integration.procs import die_with_parent
from tests.integration.rawpop import RawPOP3

START_TIMEOUT = 60.0  # two interpreters start on a loaded 2-CPU box


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    log: Path
    policy: Path
    port: int  # the POP3 listener
    metrics_port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}; popproxy output:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def worker_pids(self) -> set[int]:
        """Running workers: children of the supervisor started as ``popproxy worker``."""
        pids: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"\0worker\0" in cmdline:
                pids.add(int(entry))
        return pids

    def serving_pid(self, client: RawPOP3) -> int:
        """The worker whose socket is the other end of ``client``'s connection."""
        inode = _server_inode(self.port, client.sock.getsockname()[1])
        for pid in self.worker_pids():
            if inode in _socket_inodes(pid):
                return pid
        raise AssertionError(f"no worker holds the connection (inode {inode})")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` (with these labels) on the supervisor's /metrics."""
        status, body = prom.http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        assert status == 200
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def sessions_on_each_worker(self, user: str, password: str, tries: int = 400
                                ) -> dict[int, RawPOP3]:
        """Logged-in sessions until every worker holds one (the others are closed)."""
        held: dict[int, RawPOP3] = {}
        want = len(self.worker_pids())
        for _ in range(tries):
            client = RawPOP3(self.port)
            client.login(user, password)
            pid = self.serving_pid(client)
            if pid in held:
                client.close()
            else:
                held[pid] = client
            if len(held) == want:
                return held
            time.sleep(0.01)  # a new source port: the kernel's hash may pick the other
        for client in held.values():
            client.close()
        raise AssertionError(f"{tries} connections never reached all {want} workers")


def _server_inode(proxy_port: int, client_port: int) -> str:
    """The inode of the proxy-side socket of the connection from ``client_port``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if (int(local.split(":")[1], 16) == proxy_port
                    and int(remote.split(":")[1], 16) == client_port and inode != "0"):
                return inode
        time.sleep(0.02)
    raise AssertionError(f"no proxy-side socket for client port {client_port}")


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def running_workers(root: Path, policy_text: str, port: int, metrics_port: int,
                    workers: int = 2, event_loop: str | None = None) -> Iterator[Workers]:
    """Start ``popproxy run --workers N`` (``event_loop``: ``--event-loop``, else the
    default); SIGTERM (then SIGKILL) it afterwards."""
    policy = root / "policy.yaml"
    policy.write_text(policy_text)
    log = root / "popproxy.log"
    loop = [] if event_loop is None else ["--event-loop", event_loop]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popproxy", "run", "--config", str(policy), "--workers",
             str(workers), *loop], cwd=root, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    running = Workers(proc, log, policy, port, metrics_port)
    try:
        running.wait(lambda: "popproxy ready" in running.log_text() or proc.poll() is not None,
                     "popproxy did not get ready", START_TIMEOUT)
        assert proc.poll() is None, running.log_text()
        assert _listening(port)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def worker_policy(upstream_port: int, port: int, metrics_port: int, root: Path,
                  limits: str = "{auth_failure_delay: 0, shutdown_grace: 10}",
                  lockout: str = "{enabled: false}", extra: str = "") -> str:
    """A policy for ``popproxy run --workers N`` in front of the test Dovecot: one plain
    listener, metrics on, scanning off."""
    return (
        f"listeners: [{{name: pop3, host: 127.0.0.1, port: {port}, mode: plain, "
        "allow_plaintext_login: true}]\n"
        f"upstream: {{host: 127.0.0.1, port: {upstream_port}, connect_timeout: 5, "
        "greeting_timeout: 5, response_timeout: 30}\n"
        f"state_dir: {root / 'state'}\n"
        f"observability: {{metrics_host: 127.0.0.1, metrics_port: {metrics_port}}}\n"
        f"limits: {limits}\nlockout: {lockout}\nscan: {{enabled: false}}\n{extra}"
    )
