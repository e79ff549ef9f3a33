"""The metric table: naming rules, no identifying labels, series that exist at 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from popproxy.metrics import (
    DEFINITIONS,
    KNOWN_LABELS,
    SUPERVISOR_DEFINITIONS,
    Metrics,
    SupervisorMetrics,
)


def test_every_declared_metric_follows_the_naming_rules() -> None:
    for attribute, definition in DEFINITIONS.items():
        assert definition.name.startswith("popproxy_"), attribute
        assert not {"user", "username", "ip", "client", "url", "host"} & set(definition.labels)
        kind = definition.kind.__name__
        if kind == "Counter":
            assert definition.name.endswith("_total")
        if kind == "Histogram":
            assert definition.name.endswith("_seconds")


def test_every_definition_becomes_a_typed_attribute() -> None:
    metrics = Metrics()
    for attribute, definition in DEFINITIONS.items():
        assert isinstance(getattr(metrics, attribute), definition.kind), attribute
    assert set(KNOWN_LABELS) <= set(DEFINITIONS)


def test_known_label_values_exist_at_zero() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    assert sample("popproxy_logins_total", {"result": "bad_credentials"}) == 0.0
    assert sample("popproxy_messages_scanned_total",
                  {"verdict": "flagged", "action": "quarantine"}) == 0.0
    assert sample("popproxy_logins_total", {"result": "not-a-result"}) is None


def test_listener_and_upstream_series_are_prepared_on_request() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    labels = {"listener": "pop3s", "result": "denied"}
    assert sample("popproxy_connections_total", labels) is None
    metrics.prepare_listener("pop3s")
    metrics.prepare_upstream("dovecot")
    assert sample("popproxy_connections_total", labels) == 0.0
    assert sample("popproxy_active_sessions", {"listener": "pop3s"}) == 0.0
    assert sample("popproxy_upstream_errors_total",
                  {"upstream": "dovecot", "reason": "tls_verify"}) == 0.0


def test_child_is_the_labelled_series_looked_up_once() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    ok = metrics.child(metrics.logins, "ok")
    assert ok is metrics.child(metrics.logins, "ok")  # the same child, not a new look-up
    assert metrics.child(metrics.logins, "refused") is not ok
    ok.inc()
    metrics.child(metrics.logins, "ok").inc()
    assert sample("popproxy_logins_total", {"result": "ok"}) == 2.0
    assert sample("popproxy_logins_total", {"result": "refused"}) == 0.0
    active = metrics.child(metrics.active_sessions, "pop3s")
    active.inc()
    assert sample("popproxy_active_sessions", {"listener": "pop3s"}) == 1.0
    other = Metrics()  # each instance memoises its own registry's children
    assert other.child(other.logins, "ok") is not ok


def test_each_instance_has_its_own_registry_unless_one_is_given() -> None:
    first, second = Metrics(), Metrics()
    first.logins.labels("ok").inc()
    assert second.registry.get_sample_value("popproxy_logins_total", {"result": "ok"}) == 0.0
    shared = CollectorRegistry()
    metrics = Metrics(shared)
    assert metrics.registry is shared
    assert isinstance(metrics.logins, Counter)


def test_build_info_process_metrics_and_no_created_series() -> None:
    from prometheus_client import generate_latest

    from popproxy import __version__

    metrics = Metrics()
    metrics.logins.labels("ok").inc()
    metrics.session_duration.labels("pop3").observe(1.0)
    sample = metrics.registry.get_sample_value
    assert sample("popproxy_build_info", {"version": __version__}) == 1.0
    assert (sample("process_resident_memory_bytes") or 0) > 0  # ProcessCollector (Linux /proc)
    assert (sample("process_open_fds") or 0) > 0
    assert sample("process_cpu_seconds_total") is not None
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    assert 'python_info{implementation="CPython"' in text  # PlatformCollector


def test_buckets_fit_long_sessions_and_split_login_latency_by_result() -> None:
    metrics = Metrics()
    metrics.prepare_upstream("dovecot")
    metrics.session_duration.labels("pop3").observe(700.0)  # an idle client at autologout
    metrics.upstream_login_seconds.labels("dovecot", "refused").observe(2.2)
    sample = metrics.registry.get_sample_value
    assert sample("popproxy_session_duration_seconds_bucket",
                  {"listener": "pop3", "le": "600.0"}) == 0.0
    assert sample("popproxy_session_duration_seconds_bucket",
                  {"listener": "pop3", "le": "1800.0"}) == 1.0
    assert sample("popproxy_session_duration_seconds_bucket",
                  {"listener": "pop3", "le": "0.1"}) == 0.0
    assert sample("popproxy_upstream_login_seconds_count",
                  {"upstream": "dovecot", "result": "refused"}) == 1.0
    assert sample("popproxy_upstream_login_seconds_count",
                  {"upstream": "dovecot", "result": "ok"}) == 0.0  # prepared at 0
    assert sample("popproxy_tls_handshake_failures_total",
                  {"listener": "pop3", "reason": "timeout"}) is None
    metrics.prepare_listener("pop3")
    assert sample("popproxy_tls_handshake_failures_total",
                  {"listener": "pop3", "reason": "timeout"}) == 0.0


def test_supervisor_metrics_follow_the_rules_and_exist_at_zero() -> None:
    for definition in SUPERVISOR_DEFINITIONS.values():
        assert definition.name.startswith("popproxy_")
        assert definition.name not in {d.name for d in DEFINITIONS.values()}  # no clash
    metrics = SupervisorMetrics()
    sample = metrics.registry.get_sample_value
    assert sample("popproxy_worker_restarts_total", {"reason": "signal"}) == 0
    assert sample("popproxy_worker_restarts_total", {"reason": "exit"}) == 0
    for result in ("ok", "refused", "worker_refused"):
        assert sample("popproxy_supervisor_reloads_total", {"result": result}) == 0
    assert sample("popproxy_workers") == 0


def test_gauges_declare_how_workers_combine() -> None:
    """Sessions add up over workers; lockouts are counted from shared state, so the same
    blocks seen by every worker must not be multiplied (docs/scaling.md)."""
    modes = {d.name: d.multiprocess_mode for d in DEFINITIONS.values() if d.kind is Gauge}
    assert modes == {"popproxy_active_sessions": "livesum",
                     "popproxy_lockouts_active": "livemax",
                     "popproxy_build_info": "livemax",
                     "popproxy_upstream_up": "livemax",
                     "popproxy_tls_certificate_expiry_timestamp_seconds": "livemin",
                     "popproxy_scan_listing_budget_seconds": "livemin"}


MULTIPROCESS_PROBE = r"""
import os
import popproxy.metrics
from popproxy.metrics import Metrics

metrics = Metrics()
metrics.logins.labels("ok").inc()
popproxy.metrics._PID[0] = 4242424  # the cached pid is what the values consult, not getpid()
metrics.logins.labels("ok").inc()
popproxy.metrics._PID[0] = os.getpid()
metrics.logins.labels("ok").inc()
child = os.fork()
if child == 0:  # a forked child (the scan pool may fork) writes to a file of its own
    metrics.logins.labels("ok").inc()
    os._exit(0)
os.waitpid(child, 0)
print(os.getpid(), child)
"""


def test_multiprocess_values_do_not_ask_the_pid_per_update_but_notice_a_fork(
        tmp_path: Path) -> None:
    """Issue 18: prometheus_client's multiprocess values called os.getpid() (a system call)
    at every update; popproxy caches it, renewed in a forked child, whose values still go
    to a file of its own."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", MULTIPROCESS_PROBE], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    parent, child = (int(x) for x in done.stdout.split())
    assert (tmp_path / "counter_4242424.db").exists()
    assert (tmp_path / f"counter_{parent}.db").exists()
    assert (tmp_path / f"counter_{child}.db").exists()
