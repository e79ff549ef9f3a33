"""``popproxy run --workers 2``: the workers share lockouts and session caps through the host
file (issue 18 item 2), wired by the supervisor itself (not a test hook)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.dovecot import Dovecot
from tests.integration.rawpop import RawPOP3
from tests.integration.workers_proc import Workers, running_workers, worker_policy
from tests.support.ports import free_port

BLOCK_AFTER = 3
MAX_SESSIONS = 3
LOCKED = b"-ERR [SYS/TEMP] too many failed logins"
TOO_MANY = b"-ERR [SYS/TEMP] too many connections"
REFUSALS = 8  # connections tried past the cap (the kernel spreads them over the workers)


def _policy(dovecot: Dovecot, port: int, metrics_port: int, root: Path) -> str:
    return worker_policy(
        dovecot.port, port, metrics_port, root,
        limits=f"{{auth_failure_delay: 0.01, shutdown_grace: 5, max_sessions: {MAX_SESSIONS}}}",
        lockout=f"{{pair: {{free: 1, block_after: {BLOCK_AFTER}}}, base_delay: 0.01, "
                "max_delay: 0.05}")


@pytest.fixture
def workers(dovecot: Dovecot, tmp_path: Path) -> Iterator[Workers]:
    port, metrics_port = free_port(), free_port()
    with running_workers(tmp_path, _policy(dovecot, port, metrics_port, tmp_path), port,
                         metrics_port) as running:
        assert len(running.worker_pids()) == 2
        yield running


def _connection_on(workers: Workers, pid: int, tries: int = 400) -> RawPOP3:
    """A new connection that the kernel gave to worker ``pid``."""
    for _ in range(tries):
        client = RawPOP3(workers.port)
        # +OK first: a slot a just-closed probe held may not be given back yet (refused).
        if client.greeting.startswith(b"+OK") and workers.serving_pid(client) == pid:
            return client
        client.close()
        time.sleep(0.01)  # a new source port: the kernel's hash may pick the other
    raise AssertionError(f"no connection reached worker {pid} in {tries} tries")


def test_a_lockout_earned_through_one_worker_holds_at_the_other(workers: Workers,
                                                                dovecot: Dovecot) -> None:
    a, b = sorted(workers.worker_pids())
    waiting_at_b = _connection_on(workers, b)
    try:
        assert waiting_at_b.command("USER bob").startswith(b"+OK")
        for attempt in range(BLOCK_AFTER):
            with _connection_on(workers, a) as guess:
                assert guess.command("USER bob").startswith(b"+OK")
                assert guess.command(f"PASS wrong{attempt}").startswith(b"-ERR [AUTH]")
        answered_at_a = time.monotonic()
        reply = waiting_at_b.command(f"PASS {dovecot.password('bob')}")
        locked_at_b = time.monotonic()
    finally:
        waiting_at_b.close()
    assert reply.startswith(LOCKED), reply
    assert locked_at_b - answered_at_a < 0.1, f"{locked_at_b - answered_at_a:.3f} s"


def test_max_sessions_holds_for_the_host_not_per_worker(workers: Workers) -> None:
    """Three sessions held (two on one worker, one on the other): every further connection is
    refused, wherever the kernel hands it.  With per-worker caps the worker holding one
    session would admit two more, so some of the REFUSALS connections would get +OK."""
    pids = sorted(workers.worker_pids())
    opened = [_connection_on(workers, pids[0]), _connection_on(workers, pids[1]),
              _connection_on(workers, pids[0])]
    try:
        for client in opened:
            assert client.greeting.startswith(b"+OK")
        for _ in range(REFUSALS):
            with RawPOP3(workers.port) as refused:
                assert refused.greeting.startswith(TOO_MANY), refused.greeting
    finally:
        for client in opened:
            client.close()
    workers.wait(lambda: workers.metric("popproxy_active_sessions") == 0, "sessions to end")
    assert workers.metric("popproxy_connections_total", result="over_capacity") >= REFUSALS
    with RawPOP3(workers.port) as again:  # the slots came back
        assert again.greeting.startswith(b"+OK")
