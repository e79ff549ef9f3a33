#!/usr/bin/env python3
"""Builds grafana/popproxy.json (run after changing a panel; the JSON is committed).

Every panel query uses only metrics declared in popproxy/metrics.py; the Prometheus test
(tests/integration/test_prometheus.py) runs each query against a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}

ROWS: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("Traffic", [
        ("Connections by result", "sum by (result) (rate(popproxy_connections_total[5m]))",
         "ops"),
        ("Active sessions", "sum by (listener) (popproxy_active_sessions)", "short"),
        ("Bytes to clients", "sum(rate(popproxy_bytes_relayed_total[5m]))", "Bps"),
        ("Session duration p90",
         "histogram_quantile(0.9, sum by (le) "
         "(rate(popproxy_session_duration_seconds_bucket[5m])))",
         "s"),
    ]),
    ("TLS", [
        ("Handshakes by version and result",
         "sum by (version, result) (rate(popproxy_tls_handshakes_total[5m]))", "ops"),
        ("Logins refused before TLS",
         "sum by (command) (increase(popproxy_login_before_tls_refused_total[1h]))", "short"),
        ("STLS injection attempts", "sum(increase(popproxy_stls_injection_attempts_total[1h]))",
         "short"),
    ]),
    ("Authentication and lockouts", [
        ("Logins by result", "sum by (result) (rate(popproxy_logins_total[5m]))", "ops"),
        ("Lockout blocks by scope", "sum by (scope) (increase(popproxy_lockout_blocks_total[1h]))",
         "short"),
        ("Active lockouts", "sum by (scope) (popproxy_lockouts_active)", "short"),
        ("Lockout store errors", "sum by (operation) (increase(popproxy_redis_errors_total[1h]))",
         "short"),
    ]),
    ("Policy", [
        ("Policy denials by stage", "sum by (stage) (increase(popproxy_policy_denials_total[1h]))",
         "short"),
        ("PROXY protocol rejects",
         "sum by (reason) (increase(popproxy_proxy_protocol_rejects_total[1h]))", "short"),
        ("Config reloads", "sum by (result) (increase(popproxy_config_reloads_total[1h]))",
         "short"),
    ]),
    ("Scanning", [
        ("Messages by verdict and action",
         "sum by (verdict, action) (increase(popproxy_messages_scanned_total[1h]))", "short"),
        ("Signals hit", "topk(10, sum by (signal) (increase(popproxy_scan_signals_total[1h])))",
         "short"),
        ("Scan duration p95",
         "histogram_quantile(0.95, sum by (le) "
         "(rate(popproxy_scan_duration_seconds_bucket[5m])))",
         "s"),
        ("Verdict cache by result",
         "sum by (result) (rate(popproxy_verdict_cache_total[5m]))", "ops"),
        # Issue 17: a feed or threshold change should show as "rescored", not "downloaded".
        ("Messages judged: downloaded vs re-scored",
         "sum by (how) (rate(popproxy_scan_judged_total[5m]))", "ops"),
        ("Bytes read from upstreams to judge",
         "sum(rate(popproxy_scan_judge_bytes_total[5m]))", "Bps"),
        # Issue 17: the first listing within scan.listing_budget; the rest judged at RETR.
        ("First listing time p95",
         "histogram_quantile(0.95, sum by (le) "
         "(rate(popproxy_scan_listing_seconds_bucket[5m])))", "s"),
        ("Messages left to RETR by the listing budget",
         "sum(rate(popproxy_scan_listing_deferred_total[5m]))", "ops"),
    ]),
    ("Upstreams", [
        ("Upstream errors by reason",
         "sum by (upstream, reason) (increase(popproxy_upstream_errors_total[1h]))", "short"),
        ("Upstream login latency p95",
         "histogram_quantile(0.95, sum by (le, upstream) "
         "(rate(popproxy_upstream_login_seconds_bucket[5m])))", "s"),
    ]),
]


# A second series on a panel: the alert's threshold drawn next to the value it watches.
THRESHOLDS: dict[str, tuple[str, str]] = {
    # PopproxyListingNearBudget (alerts.yml): p95 over 75% of the smallest budget exported.
    "First listing time p95": ("0.75 * min(popproxy_scan_listing_budget_seconds > 0)",
                               "alert threshold (75% of scan.listing_budget)"),
}


def panel(pid: int, title: str, expr: str, unit: str, x: int, y: int) -> dict[str, Any]:
    built = _panel(pid, title, expr, unit, x, y)
    if title in THRESHOLDS:
        threshold, legend = THRESHOLDS[title]
        built["targets"].append({"refId": "B", "datasource": DS, "expr": threshold,
                                 "legendFormat": legend})
    return built


def _panel(pid: int, title: str, expr: str, unit: str, x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": "A", "datasource": DS, "expr": expr, "legendFormat": "__auto"}],
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for index, (title, expr, unit) in enumerate(row_panels):
            # Four panels a line: a row with more wraps instead of stacking them on one spot.
            panels.append(panel(pid, title, expr, unit, (index % 4) * 6, y + index // 4 * 8))
            pid += 1
        y += 8 * -(-len(row_panels) // 4)
    return {
        "title": "popproxy", "uid": "popproxy", "schemaVersion": 38, "version": 1,
        "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "tags": ["popproxy", "pop3", "security"],
        "templating": {"list": [{"name": "datasource", "label": "Prometheus",
                                 "type": "datasource", "query": "prometheus",
                                 "current": {}, "hide": 0}]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("popproxy.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {out}")
