"""The metric table: naming rules, no identifying labels, series that exist at 0."""

from __future__ import annotations

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


def test_each_instance_has_its_own_registry_unless_one_is_given() -> None:
    first, second = Metrics(), Metrics()
    first.logins.labels("ok").inc()
    assert second.registry.get_sample_value("popproxy_logins_total", {"result": "ok"}) == 0.0
    shared = CollectorRegistry()
    metrics = Metrics(shared)
    assert metrics.registry is shared
    assert isinstance(metrics.logins, Counter)


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
                     "popproxy_lockouts_active": "livemax"}
