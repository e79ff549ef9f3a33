"""``popproxy run --workers 2`` in front of the real Dovecot (issue 18 item 1).

Each test starts the real CLI (a supervisor and two re-exec'd workers, each with its own
listening socket on the port) and finds which worker serves a connection through /proc
(workers_proc.py), so "a session on each worker" is a fact, not a hope.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import prom
from tests.integration.dovecot import Dovecot
from tests.integration.rawpop import RawPOP3
from tests.integration.workers_proc import (
    START_TIMEOUT,
    Workers,
    running_workers,
    worker_policy,
)
from tests.support.ports import accept_queue_sizes, free_port


def _policy(dovecot: Dovecot, port: int, metrics_port: int, root: Path,
            users: str = "") -> str:
    """With an audit log (``root``/audit.jsonl): the supervisor writes to it too."""
    policy = worker_policy(dovecot.port, port, metrics_port, root, extra=users)
    metrics = f"metrics_port: {metrics_port}}}"
    assert metrics in policy
    return policy.replace(metrics, f"metrics_port: {metrics_port}, "
                                   f"audit_log: {root / 'audit.jsonl'}}}")


def _audit(root: Path, event: str) -> list[dict[str, Any]]:
    path = root / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [record for record in records if record["event"] == event]


@pytest.fixture
def workers(dovecot: Dovecot, tmp_path: Path) -> Iterator[Workers]:
    port, metrics_port = free_port(), free_port()
    with running_workers(tmp_path, _policy(dovecot, port, metrics_port, tmp_path), port,
                         metrics_port) as running:
        assert len(running.worker_pids()) == 2
        yield running


def _direct_stat(dovecot: Dovecot, user: str) -> bytes:
    with RawPOP3(dovecot.port) as client:
        client.login(user, dovecot.password(user))
        return client.command("STAT")


def test_two_workers_serve_sessions(workers: Workers, dovecot: Dovecot) -> None:
    held = workers.sessions_on_each_worker("bob", "bobpw")
    try:
        assert set(held) == workers.worker_pids()
        expected = _direct_stat(dovecot, "bob")
        for client in held.values():
            assert client.command("STAT") == expected
            assert client.command("RETR 1").startswith(b"+OK")
            assert client.command("QUIT").startswith(b"+OK")
    finally:
        for client in held.values():
            client.close()
    workers.wait(lambda: workers.metric("popproxy_active_sessions") == 0, "sessions to end")
    assert workers.metric("popproxy_connections_total", result="accepted") >= 2


def test_a_killed_worker_commits_nothing_and_is_restarted(workers: Workers,
                                                          dovecot: Dovecot) -> None:
    """SIGKILL of the worker serving a session that marked a message deleted: the client is
    cut, Dovecot still has the message (no QUIT reached it), the other worker's session goes
    on, and the supervisor starts a new worker (counted)."""
    dovecot.reset_mailbox("dele")
    before = _direct_stat(dovecot, "dele")
    assert before.startswith(b"+OK 3 ")
    victims = workers.sessions_on_each_worker("dele", "delepw")
    bystander_pid, victim_pid = sorted(victims)
    bystander, victim = victims.pop(bystander_pid), victims.pop(victim_pid)
    try:
        assert victim.command("DELE 1").startswith(b"+OK")
        assert victim.command("STAT").startswith(b"+OK 2 ")
        os.kill(victim_pid, signal.SIGKILL)
        with pytest.raises((EOFError, ConnectionError)):
            victim.command("STAT")
        # The bystander's session (same mailbox, its own Dovecot session) is untouched.
        assert bystander.command("STAT") == before
        assert bystander.command("RETR 2").startswith(b"+OK")
        workers.wait(lambda: workers.metric("popproxy_worker_restarts_total",
                                            reason="signal") == 1, "restart counted")
        workers.wait(lambda: len(workers.worker_pids()) == 2 and victim_pid not in
                     workers.worker_pids(), "a new worker")
        assert bystander.command("NOOP").startswith(b"+OK")
        bystander.close()  # no QUIT: its session commits nothing either
    finally:
        victim.close()
        bystander.close()
    time.sleep(0.5)  # Dovecot would commit a (wrongly) relayed QUIT within this time
    assert _direct_stat(dovecot, "dele") == before
    assert f"(pid {victim_pid}) ended (signal 9)" in workers.log_text()
    # The new worker serves: both workers answer again.
    again = workers.sessions_on_each_worker("bob", "bobpw")
    assert set(again) == workers.worker_pids()
    for client in again.values():
        client.close()


def test_sigterm_drains_every_worker(workers: Workers, dovecot: Dovecot) -> None:
    held = workers.sessions_on_each_worker("bob", "bobpw")
    workers.proc.send_signal(signal.SIGTERM)
    workers.wait(lambda: "draining" in workers.log_text(), "drain begins")
    time.sleep(0.3)
    with pytest.raises(OSError):  # nobody accepts any more
        RawPOP3(workers.port, timeout=2)
    for client in held.values():  # sessions in progress finish normally
        assert client.command("RETR 1").startswith(b"+OK")
        assert client.command("QUIT").startswith(b"+OK")
        client.close()
    assert workers.proc.wait(20) == 0
    assert not workers.worker_pids()


def test_sighup_reaches_every_worker(workers: Workers, dovecot: Dovecot,
                                     tmp_path: Path) -> None:
    """A valid policy is applied by both workers (bob may then log in only from a network we
    never use); an invalid one is refused by the supervisor and reaches no worker, and is
    counted and audited once, as with one process."""
    ok_before = workers.metric("popproxy_config_reloads_total", result="ok")
    workers.policy.write_text(_policy(
        dovecot, workers.port, workers.metrics_port, tmp_path,
        users="users: [{match: bob, allow: [192.0.2.0/24]}]\n"))
    workers.proc.send_signal(signal.SIGHUP)
    workers.wait(lambda: "policy reloaded by 2 workers" in workers.log_text(), "reload")
    assert workers.metric("popproxy_supervisor_reloads_total", result="ok") == 1
    # Each worker counted its own reload (policy and certificates: none here, so one).
    assert workers.metric("popproxy_config_reloads_total", result="ok") - ok_before == 2
    seen: set[int] = set()
    for _ in range(60):
        with RawPOP3(workers.port) as client:
            seen.add(workers.serving_pid(client))
            assert client.command("USER bob").startswith(b"+OK")
            assert client.command("PASS bobpw").startswith(b"-ERR")
        if seen == workers.worker_pids():
            break
    assert seen == workers.worker_pids()

    workers.policy.write_text("listeners: [oops\n")
    workers.proc.send_signal(signal.SIGHUP)
    workers.wait(lambda: workers.metric("popproxy_supervisor_reloads_total",
                                        result="refused") == 1, "refusal")
    assert workers.metric("popproxy_config_reloads_total", result="refused") == 1
    _, body = prom.http_get(f"http://127.0.0.1:{workers.metrics_port}/metrics")
    assert body.count(b"# TYPE popproxy_config_reloads_total counter") == 1  # one family
    refusals = [r for r in _audit(tmp_path, "config_reload") if r["result"] == "refused"]
    assert len(refusals) == 1 and refusals[0]["session"] is None
    assert "invalid YAML" in refusals[0]["error"]
    assert len([r for r in _audit(tmp_path, "config_reload") if r["result"] == "ok"]) == 2
    assert workers.proc.poll() is None


def test_a_reload_resizes_every_workers_accept_queue(workers: Workers, dovecot: Dovecot,
                                                     tmp_path: Path) -> None:
    """``limits.listen_backlog`` on SIGHUP: each worker listens again on its socket of the
    group, so the whole port's queue follows the policy without a restart."""
    before = accept_queue_sizes(workers.port)
    assert len(before) == 2 and 64 not in before
    workers.policy.write_text(_policy(dovecot, workers.port, workers.metrics_port, tmp_path)
                              .replace("shutdown_grace: 10}", "shutdown_grace: 10, "
                                       "listen_backlog: 64}"))
    workers.proc.send_signal(signal.SIGHUP)
    workers.wait(lambda: "policy reloaded by 2 workers" in workers.log_text(), "reload")
    assert accept_queue_sizes(workers.port) == [64, 64]


# Connections opened in one go (fewer than Dovecot's default process_limit of 100 login
# processes), and the share of them each of the 2 workers must serve: the kernel hashes
# connections over the workers' sockets, and a binomial(80, 1/2) falls under 20 on either side
# about 3 times in a million runs.
BURST = 80
FAIR_SHARE = 0.25
AWAKE_FOR = 0.5  # seconds one worker runs alone: it accepts what it can (all, until now)


def _burst(running: Workers, busy: int | None) -> Counter[int]:
    """BURST connections (with worker ``busy`` stopped meanwhile), then a login on each;
    how many each worker served."""
    if busy is not None:  # as if descheduled on a loaded host, or in a long GC pause
        os.kill(busy, signal.SIGSTOP)
    try:
        clients = [RawPOP3(running.port, read_greeting=False) for _ in range(BURST)]
        if busy is not None:
            time.sleep(AWAKE_FOR)
    finally:
        if busy is not None:
            os.kill(busy, signal.SIGCONT)
    served: Counter[int] = Counter()
    try:
        for client in clients:
            assert client.read_line().startswith(b"+OK")
            served[running.serving_pid(client)] += 1
            client.login("bob", "bobpw")
            assert client.command("QUIT").startswith(b"+OK")
    finally:
        for client in clients:
            client.close()
    return served


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_burst_of_connections_is_shared_by_the_workers(dovecot: Dovecot, tmp_path: Path,
                                                         event_loop: str) -> None:
    """BURST clients connect at once (the kernel completes each handshake and queues it), then
    each logs in and quits; again with one worker stopped while they connect.  Every worker
    serves at least FAIR_SHARE of each burst, on either event loop.  With one shared socket
    the worker awake first accepted nearly all of a burst (asyncio's loop: up to 100 per
    wake-up, 39 of 40 in one run) and, with the other stopped, all of it (uvloop too)."""
    port, metrics_port = free_port(), free_port()
    policy = worker_policy(dovecot.port, port, metrics_port, tmp_path, limits=(
        f"{{auth_failure_delay: 0, shutdown_grace: 10, max_sessions_per_ip: {BURST}}}"))
    with running_workers(tmp_path, policy, port, metrics_port,
                         event_loop=event_loop) as running:
        pids = running.worker_pids()
        bursts = [_burst(running, None), _burst(running, max(pids))]
    for served in bursts:
        assert set(served) == pids, bursts
        assert min(served.values()) >= FAIR_SHARE * BURST, bursts


QUEUED = 20  # connections made while a worker is stopped, then killed


def test_a_dead_workers_socket_leaves_its_group_and_nothing_hangs(workers: Workers) -> None:
    """A worker is killed while connections wait in its socket's queue: its socket leaves the
    listener's group (review: kept there, it went on taking a share of new connections that
    nobody accepted until a replacement was up, for ever in a crash loop).  What it had queued
    is reset (or moved to the others where net.ipv4.tcp_migrate_req = 1), never left waiting;
    new connections are greeted; the replacement serves again."""
    survivor, victim = sorted(workers.worker_pids())
    os.kill(victim, signal.SIGSTOP)  # nothing is accepted from its queue from now on
    clients = [RawPOP3(workers.port, read_greeting=False) for _ in range(QUEUED)]
    try:
        time.sleep(AWAKE_FOR)  # the survivor takes its share
        os.kill(victim, signal.SIGKILL)
        outcomes: Counter[str] = Counter()
        for client in clients:
            client.sock.settimeout(START_TIMEOUT)
            try:
                outcomes["greeted" if client.read_line().startswith(b"+OK") else "other"] += 1
            except (ConnectionError, EOFError):
                outcomes["reset"] += 1
        assert outcomes["other"] == 0 and outcomes["greeted"] >= 1, outcomes
        served: Counter[int] = Counter()
        for _ in range(QUEUED):
            with RawPOP3(workers.port) as client:  # greeted, or this raises
                served[workers.serving_pid(client)] += 1
    finally:
        for client in clients:
            client.close()
    assert victim not in served
    workers.wait(lambda: len(workers.worker_pids() - {survivor}) == 1, "a replacement",
                 START_TIMEOUT)
    (replacement,) = workers.worker_pids() - {survivor}
    seen: set[int] = set()
    for _ in range(60):  # its socket joined the group again: it gets a share
        with RawPOP3(workers.port) as client:
            seen.add(workers.serving_pid(client))
        if replacement in seen:
            break
    assert replacement in seen, seen


def _tls_policy(dovecot: Dovecot, port: int, metrics_port: int, root: Path,
                names: list[str]) -> str:
    """A policy with one implicit-TLS listener serving a certificate per name in ``names``
    (made by ``_issue`` in ``root``)."""
    certificates = ", ".join(f"{{cert: {root / name}.pem, key: {root / name}.pem, names: [{name}]}}"
                             for name in names)
    return worker_policy(dovecot.port, port, metrics_port, root).replace(
        "mode: plain, allow_plaintext_login: true", "mode: tls") + (
        f"tls: {{certificates: [{certificates}]}}\n")


def test_a_certificate_removed_by_a_reload_leaves_the_supervisors_metrics(
        dovecot: Dovecot, tmp_path: Path) -> None:
    """Regression (review): with workers, prometheus_client's per-process files kept the
    expiry series of a certificate no longer served (Gauge.clear() cannot delete from them), so
    /metrics showed it, and alerted on it, until a restart."""
    ca = trustme.CA()
    for name in ("a.example", "b.example"):
        ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(
            str(tmp_path / f"{name}.pem"))
    port, metrics_port = free_port(), free_port()
    both = _tls_policy(dovecot, port, metrics_port, tmp_path, ["a.example", "b.example"])
    with running_workers(tmp_path, both, port, metrics_port) as running:
        assert len(running.worker_pids()) == 2
        assert _expiry_names(running) == {"a.example", "b.example"}
        running.policy.write_text(_tls_policy(dovecot, port, metrics_port, tmp_path,
                                              ["a.example"]))
        running.proc.send_signal(signal.SIGHUP)
        running.wait(lambda: "policy reloaded by 2 workers" in running.log_text(), "reload")
        assert _expiry_names(running) == {"a.example"}
        running.policy.write_text(both)  # served again: back in /metrics
        running.proc.send_signal(signal.SIGHUP)
        running.wait(lambda: running.log_text().count("policy reloaded by 2 workers") == 2,
                     "second reload")
        assert _expiry_names(running) == {"a.example", "b.example"}


def _expiry_names(running: Workers) -> set[str]:
    """The ``name`` labels of the certificate expiry series on the supervisor's /metrics."""
    status, body = prom.http_get(f"http://127.0.0.1:{running.metrics_port}/metrics")
    assert status == 200
    return {sample.labels["name"] for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "popproxy_tls_certificate_expiry_timestamp_seconds"}
