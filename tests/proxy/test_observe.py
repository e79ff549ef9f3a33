"""The Observer bundles what a session reports to; each part is injectable."""

from __future__ import annotations

import io
import json

from popproxy.auditlog import AuditLog
from popproxy.metrics import Metrics
from popproxy.proxy.observe import Observer, random_session_id


def test_session_ids_are_short_random_hex() -> None:
    ids = {random_session_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


def test_defaults_are_fresh_metrics_and_a_silent_audit_log() -> None:
    first, second = Observer(), Observer()
    assert first.metrics.registry is not second.metrics.registry
    assert first.audit.path is None


def test_injected_parts_are_used() -> None:
    sink = io.StringIO()
    metrics = Metrics()
    observer = Observer(metrics, AuditLog(sink, clock=lambda: 5.0), lambda: "fixed")
    observer.audit.event("connect", observer.new_session_id())
    assert observer.metrics is metrics
    assert json.loads(sink.getvalue())["session"] == "fixed"
