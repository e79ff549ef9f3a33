"""Two workers of one host share lockouts and verdicts through SQLite, session caps through
the host's slot table.

Real processes: A and B are ``popproxy run`` (``tests.integration.host_worker``) with their own
listener and audit log, the same ``state_dir``, so the same ``<state_dir>/host.sqlite3`` and
``<state_dir>/session-slots``, both in front of the test Dovecot, as the workers of one host
are.  Nothing else is shared: no Redis.

Proves: failures counted at A block the same account and source at B within 100 ms;
``max_sessions`` and ``max_sessions_per_ip`` count the sessions of both workers; a killed
worker's slots come back with ``release_worker``; a message judged at A is listed and delivered
by B with the same size and bytes without B scanning it; no worker writes ``verdicts.jsonl``.
"""

from __future__ import annotations

import json
import poplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy.host_slots import held_on_host
from popproxy.proxy.host_state import DB_FILE, release_worker
from tests.integration.dovecot import Dovecot
from tests.integration.procs import die_with_parent, stop_process
from tests.support.ports import free_port

WRONG = ("Wrong-Guess-1", "Wrong-Guess-2", "Wrong-Guess-3")  # pair.block_after: 3
LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later"
AUTH_FAILED = b"-ERR [AUTH] authentication failed"
TOO_MANY = b"-ERR [SYS/TEMP] too many connections, try again later"
MAX_SESSIONS, MAX_PER_IP = 3, 2
START_TIMEOUT = 30.0
PHISH = 2  # the scan user's second message is phishing (tests/integration/mailboxes.py)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Worker:
    """One ``popproxy run`` process with a HostShare."""

    worker_id: int
    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        try:
            return (self.root / "popproxy.log").read_text(errors="replace")
        except OSError:
            return ""

    def audit(self, event: str, **match: object) -> list[dict[str, Any]]:
        path = self.root / "audit.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if (
            path.exists()) else []
        return [r for r in records
                if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.worker_id} exited with {self.proc.returncode}:\n"
                            f"{self.log_text()[-3000:]}")
            return "popproxy ready" in self.log_text()

        _wait(ready, f"worker {self.worker_id} to start", START_TIMEOUT)

    def connect(self, source: str = "127.0.0.1") -> PopFrom:
        return PopFrom(self.port, source)


class PopFrom(poplib.POP3):
    """``poplib.POP3`` from a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def _policy(root: Path, state: Path, port: int, upstream: int) -> dict[str, Any]:
    return {
        "listeners": [{"name": "pop3", "host": "127.0.0.1", "port": port, "mode": "plain",
                       "allow_plaintext_login": True}],
        "upstream": {"host": "127.0.0.1", "port": upstream},
        "state_dir": str(state),  # one for the host, as the workers of a host share it
        "limits": {"auth_failure_delay": 0.01, "shutdown_grace": 1,
                   "max_sessions": MAX_SESSIONS, "max_sessions_per_ip": MAX_PER_IP},
        "lockout": {"pair": {"free": 1, "block_after": len(WRONG)},
                    "base_delay": 0.01, "max_delay": 0.05},
        "observability": {"audit_log": str(root / "audit.jsonl")},
        "scan": {"enabled": True, "workers": 1},
    }


def _spawn(worker_id: int, base: Path, upstream: int) -> Worker:
    root, state = base / f"w{worker_id}", base / "state"
    (root / "policy").mkdir(parents=True)
    port = free_port()
    (root / "policy" / "policy.yaml").write_text(json.dumps(_policy(root, state, port,
                                                                    upstream)))
    with (root / "popproxy.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.host_worker", str(state / DB_FILE),
             str(worker_id), "run", "--config", str(root / "policy")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
    return Worker(worker_id, port, root, proc)


@dataclass
class Host:
    a: Worker
    b: Worker
    base: Path
    upstream: int

    @property
    def db(self) -> Path:
        return self.base / "state" / DB_FILE

    def slots_held(self) -> int:
        return held_on_host(self.db)

    def settle(self, held: int = 0) -> None:
        """Sessions end in the worker a moment after the client sees the socket close."""
        _wait(lambda: self.slots_held() == held, f"{held} session slots held")


@pytest.fixture(scope="module")
def host(dovecot: Dovecot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("host-share")
    with ExitStack() as stack:
        workers = []
        for worker_id in (1, 2):
            worker = _spawn(worker_id, base, dovecot.port)
            stack.callback(stop_process, worker.proc)
            workers.append(worker)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Worker.wait_ready, workers))
        yield Host(workers[0], workers[1], base, dovecot.port)


def _pass(client: poplib.POP3, password: str) -> bytes:
    try:
        return client.pass_(password)
    except poplib.error_proto as exc:
        return bytes(exc.args[0])


def _attempt(worker: Worker, user: str, password: str) -> bytes:
    client = worker.connect()
    try:
        client.user(user)
        reply = _pass(client, password)
        client.quit()
        return reply
    finally:
        client.close()


def test_a_lockout_earned_at_a_holds_at_b_within_100_ms(host: Host, dovecot: Dovecot) -> None:
    host.settle()
    waiting_at_b = host.b.connect()  # past USER before the guessing starts
    try:
        assert waiting_at_b.user("bob").startswith(b"+OK")
        assert [_attempt(host.a, "bob", pw) for pw in WRONG[:-1]] == [AUTH_FAILED] * 2
        host.settle(1)
        third = host.a.connect()
        try:
            third.user("bob")
            assert _pass(third, WRONG[-1]) == AUTH_FAILED
            answered_at_a = time.monotonic()
            assert _pass(waiting_at_b, dovecot.password("bob")) == LOCKED
            locked_at_b = time.monotonic()
        finally:
            third.close()
    finally:
        waiting_at_b.close()
    assert locked_at_b - answered_at_a < 0.1, f"{locked_at_b - answered_at_a:.3f} s"
    assert host.b.audit("login", result="locked", scope="pair")
    assert host.b.audit("login", result="bad_credentials") == []  # B saw no failure itself


def test_session_caps_hold_for_the_whole_host(host: Host) -> None:
    host.settle()
    opened: list[poplib.POP3] = []
    try:
        for worker, source in ((host.a, "127.0.0.2"), (host.b, "127.0.0.2")):
            opened.append(worker.connect(source))
        # A third session from 127.0.0.2, at either worker: over max_sessions_per_ip (2).
        for worker in (host.a, host.b):
            with pytest.raises(poplib.error_proto, match="too many connections"):
                worker.connect("127.0.0.2")
        opened.append(host.b.connect("127.0.0.3"))  # the host's third session
        with pytest.raises(poplib.error_proto) as refused:
            host.a.connect("127.0.0.4")  # a fourth: over max_sessions (3)
        assert refused.value.args[0] == TOO_MANY
        assert host.slots_held() == MAX_SESSIONS
    finally:
        for client in opened:
            client.close()
    host.settle()
    host.a.connect("127.0.0.4").quit()  # the slots came back


def test_a_killed_workers_slots_come_back_with_release_worker(host: Host) -> None:
    host.settle()
    third = _spawn(3, host.base, host.upstream)
    try:
        third.wait_ready()
        held = [third.connect("127.0.0.5"), third.connect("127.0.0.6"),
                third.connect("127.0.0.7")]
        host.settle(MAX_SESSIONS)
        with pytest.raises(poplib.error_proto, match="too many connections"):
            host.a.connect("127.0.0.8")
        third.proc.kill()  # a crash: its slots stay in the file
        assert third.proc.wait(10) < 0
        for client in held:
            client.close()
        assert host.slots_held() == MAX_SESSIONS
        release_worker(host.db, 3)  # what the supervisor does when it sees the worker die
        assert host.slots_held() == 0
        host.a.connect("127.0.0.8").quit()
    finally:
        stop_process(third.proc)


def _list_and_retr(worker: Worker, password: str) -> tuple[list[int], bytes, int]:
    client = worker.connect()
    try:
        client.user("scan")
        assert client.pass_(password).startswith(b"+OK")
        sizes = [int(line.split()[1]) for line in client.list()[1]]
        _, lines, octets = client.retr(PHISH)
        client.quit()
    finally:
        client.close()
    return sizes, b"".join(line + b"\r\n" for line in lines), octets


def test_a_verdict_judged_at_a_is_served_by_b_without_a_second_scan(host: Host,
                                                                    dovecot: Dovecot) -> None:
    host.settle()
    sizes, message, octets = _list_and_retr(host.a, dovecot.password("scan"))
    judged = {r["message"]: r["action"] for r in host.a.audit("verdict")}
    assert len(judged) == len(sizes) and judged[PHISH] != "pass"
    assert octets == sizes[PHISH - 1]  # RFC 1939: LIST octets == RETR octets
    host.settle()
    assert _list_and_retr(host.b, dovecot.password("scan")) == (sizes, message, octets)
    assert host.b.audit("verdict") == []  # served from the host's file, not judged again
    with sqlite3.connect(host.db) as db:
        assert db.execute("SELECT count(*) FROM verdicts").fetchone()[0] == len(sizes)
    # The file is the durable store: no per-process journal in the shared state_dir.
    assert not (host.base / "state" / "verdicts.jsonl").exists()
