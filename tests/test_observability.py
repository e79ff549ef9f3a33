"""Metrics and audit events for each security decision; secrets never appear in either.

The metric table, audit redaction and the ops endpoint have their own files (test_metrics.py,
test_auditlog.py, proxy/test_http.py); these run whole sessions.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any

import pytest
from prometheus_client import generate_latest

from popproxy.auditlog import AuditLog
from popproxy.metrics import Metrics
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_proxy

SECRET = "Corr3ct-H0rse-Batt3ry"  # a password that must never be logged


class Recorder:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        ids = iter(f"s{i}" for i in range(1000))
        self.observer = Observer(Metrics(), AuditLog(self.stream, clock=lambda: 1000.0),
                                 lambda: next(ids))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def value(self, name: str, **labels: str) -> float:
        found = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


def _session(port: int, lines: list[bytes], source: str = "127.0.0.1") -> bytes:
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        reader = sock.makefile("rb")
        out = reader.readline()
        for line in lines:
            sock.sendall(line + b"\r\n")
            out += reader.readline()
        return out


def test_login_metrics_and_audit(loop_thread: LoopThread, demo_upstream: DemoUpstream,
                                 caplog: pytest.LogCaptureFixture) -> None:
    demo_upstream.users[b"carol"] = Mailbox(SECRET.encode())
    rec = Recorder()
    users = [{"match": "blocked", "allow": ["10.0.0.0/8"]}]
    config = make_config(demo_upstream.port, users=users)
    with caplog.at_level("DEBUG"), running_proxy(config, loop_thread, rec.observer) as proxy:
        _session(proxy.port, [b"USER carol", f"PASS {SECRET}".encode(), b"QUIT"])
        _session(proxy.port, [b"USER carol", b"PASS wrong-" + SECRET.encode()])
        _session(proxy.port, [b"USER blocked", f"PASS {SECRET}".encode()])
        _session(proxy.port, [b"AUTH PLAIN AGNhcm9sAENvcnIzY3QtSDByc2UtQmF0dDNyeQ=="])
    assert rec.value("popproxy_logins_total", result="ok") == 2
    assert rec.value("popproxy_logins_total", result="bad_credentials") == 1
    assert rec.value("popproxy_logins_total", result="policy_denied") == 1
    assert rec.value("popproxy_policy_denials_total", stage="user") == 1
    assert rec.value("popproxy_connections_total", listener="pop3", result="accepted") == 4
    # Login latency by result: a refusal is not averaged into the successes.
    assert rec.value("popproxy_upstream_login_seconds_count", upstream="default",
                     result="ok") == 2
    assert rec.value("popproxy_upstream_login_seconds_count", upstream="default",
                     result="refused") == 1
    logins = [e for e in rec.events() if e["event"] == "login"]
    assert [(e["user"], e["result"], e["mechanism"]) for e in logins] == [
        ("carol", "ok", "USER"), ("carol", "bad_credentials", "USER"),
        ("blocked", "policy_denied", "USER"), ("carol", "ok", "PLAIN"),
    ]
    assert all(e["session"].startswith("s") and e["client"] == "127.0.0.1" for e in logins)
    exposed = rec.stream.getvalue() + caplog.text + generate_latest(
        rec.observer.metrics.registry).decode()
    assert SECRET not in exposed
    assert "Q29ycjNjdC1IMHJzZS1CYXR0M3J5" not in exposed  # nor its base64


def test_connect_denial_and_capacity_are_counted(loop_thread: LoopThread,
                                                 demo_upstream: DemoUpstream) -> None:
    rec = Recorder()
    listeners = [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
                  "allow_plaintext_login": True, "deny": ["127.0.0.9/32"]}]
    config = make_config(demo_upstream.port, listeners=listeners)
    with running_proxy(config, loop_thread, rec.observer) as proxy:
        assert _session(proxy.port, [], source="127.0.0.9") == b""
    assert rec.value("popproxy_connections_total", listener="pop3", result="denied") == 1
    assert rec.value("popproxy_policy_denials_total", stage="connect") == 1
    (event,) = [e for e in rec.events() if e["event"] == "connect"]
    assert event["result"] == "denied" and event["client"] == "127.0.0.9"


def test_bytes_relayed_and_session_gauges(loop_thread: LoopThread,
                                          demo_upstream: DemoUpstream) -> None:
    rec = Recorder()
    config = make_config(demo_upstream.port)
    with (
        running_proxy(config, loop_thread, rec.observer) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock,
    ):
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"USER demo\r\nPASS demo\r\nRETR 1\r\n")
        for _ in range(2):
            reader.readline()
        body = b""
        while (line := reader.readline()) != b".\r\n":
            body += line
        assert rec.value("popproxy_active_sessions", listener="pop3") == 1
        sock.sendall(b"QUIT\r\n")
        reader.readline()
    body_without_status = body.split(b"\r\n", 1)[1]
    assert rec.value("popproxy_bytes_relayed_total", direction="to_client") == len(
        body_without_status)
