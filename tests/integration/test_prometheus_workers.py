"""A real Prometheus scrapes ``popproxy run --workers 2``: one /metrics for the host.

Sessions go through both workers (which worker served each is read from /proc, see
workers_proc.py); Prometheus must see their sum, the series a single process shows from the
start must all be there, the dashboard's and the alert rules' queries must evaluate, and the
exposition must pass ``promtool check metrics`` (issue 18 item 3).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from popproxy.metrics import Metrics
from tests.integration import prom
from tests.integration.rawpop import RawPOP3
from tests.integration.workers_proc import running_workers
from tests.support.ports import free_port

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
SESSIONS = 12
MAX_SESSIONS = 60  # until both workers served one (the kernel picks the worker)


def _policy(port: int, metrics_port: int, demo_port: int, root: Path) -> str:
    return (
        f"listeners: [{{name: pop3, host: 127.0.0.1, port: {port}, mode: plain, "
        "allow_plaintext_login: true}]\n"
        f"upstream: {{host: 127.0.0.1, port: {demo_port}}}\n"
        f"state_dir: {root / 'state'}\n"
        f"observability: {{metrics_host: 127.0.0.1, metrics_port: {metrics_port}}}\n"
        "limits: {auth_failure_delay: 0, shutdown_grace: 2}\n"
        "lockout: {enabled: false}\n"
        "scan: {enabled: false}\n"
        "demo_upstream: {enabled: true}\n"
    )


def _names(exposition: bytes) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.decode().splitlines()
            if line and not line.startswith("#")}


def _startup_series() -> set[str]:
    """What one process shows before any session (the same listener, the default upstream)."""
    metrics = Metrics()
    metrics.prepare_listener("pop3")
    metrics.prepare_upstream("default")
    return {name for name in _names(generate_latest(metrics.registry))
            if not name.endswith("_created")}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((GRAFANA / "popproxy.json").read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(target["expr"] for target in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def test_prometheus_sees_the_sum_of_both_workers(tmp_path: Path) -> None:
    prom.require("prometheus")
    port, metrics_port, demo_port = free_port(), free_port(), free_port()
    policy = _policy(port, metrics_port, demo_port, tmp_path)
    with running_workers(tmp_path, policy, port, metrics_port) as workers, \
            prom.running(tmp_path / "prom", [f"127.0.0.1:{metrics_port}"],
                         [GRAFANA / "alerts.yml"]) as prometheus:
        prometheus.wait_until('up{job="popproxy"}', 1.0)
        held = workers.sessions_on_each_worker("demo", "demo")  # both workers are up
        for client in held.values():
            client.command("QUIT")
            client.close()
        workers.wait(lambda: workers.metric("popproxy_active_sessions") == 0, "sessions end")
        before = workers.metric("popproxy_connections_total", result="accepted")
        served: Counter[int] = Counter()
        while served.total() < SESSIONS or (len(served) < 2 and served.total() < MAX_SESSIONS):
            with RawPOP3(workers.port) as client:
                client.login("demo", "demo")
                served[workers.serving_pid(client)] += 1
                assert client.command("RETR 1").startswith(b"+OK")
                assert client.command("QUIT").startswith(b"+OK")
        assert len(served) == 2, served  # each worker served some, so each counted some
        accepted = workers.metric("popproxy_connections_total", result="accepted")
        assert accepted - before == served.total()  # the sum, not one worker's share
        workers.wait(lambda: workers.metric("popproxy_active_sessions") == 0, "sessions end")
        sessions = workers.metric("popproxy_session_duration_seconds_count")
        prometheus.wait_until('sum(popproxy_connections_total{result="accepted"})', accepted)
        prometheus.wait_until("sum(popproxy_session_duration_seconds_count)", sessions)
        assert prometheus.scalar("sum(popproxy_active_sessions)") == 0
        ok_logins = prometheus.scalar('sum(popproxy_logins_total{result="ok"})')
        assert ok_logins is not None and ok_logins >= served.total() + 2

        status, exposition = prom.http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        missing = _startup_series() - _names(exposition)
        assert not missing, f"not shown with workers: {sorted(missing)}"
        assert b"popproxy_worker_restarts_total" in exposition
        assert b"pid=" not in exposition  # every gauge has a mode that merges workers
        check = prom.check_metrics(exposition)
        assert check.returncode == 0, check.stdout + check.stderr

        for expr in _dashboard_exprs():
            answer = prometheus.query(expr)
            assert answer.get("status") == "success", (expr, answer)
        rules = prometheus.api("rules")
        assert rules["status"] == "success"
        broken = [rule["name"] for group in rules["data"]["groups"]
                  for rule in group["rules"] if rule["health"] == "err"]
        assert not broken, broken


def test_a_gauge_without_a_mode_would_show_per_worker_series() -> None:
    """Guard for the assertion above: ``pid=`` is what prometheus_client adds to a gauge in
    the default ``all`` mode, so its absence means every gauge declares a merging mode."""
    from popproxy.metrics import DEFINITIONS

    gauges = [d for d in DEFINITIONS.values() if d.kind.__name__ == "Gauge"]
    assert gauges and all(d.multiprocess_mode in ("livesum", "livemax", "livemin") for d in gauges)
