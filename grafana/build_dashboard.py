#!/usr/bin/env python3
"""Builds grafana/popproxy.json (run after changing a panel; the JSON is committed).

Every panel query uses only metrics popproxy exports (declared in popproxy/metrics.py, plus
prometheus_client's process_* collector and Prometheus' own ``up``), each scoped to the
``instance`` variable; every panel has a description.  The Prometheus test
(tests/integration/test_prometheus.py) runs each query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}

# Every metric selector gets this matcher (see scoped()): the dashboard shows the instances
# picked in the "instance" variable (all by default).
INSTANCE = 'instance=~"$instance"'
# Prometheus' own per-target "up" lives under the job of your scrape config: "popproxy" as in
# grafana/README.md (and grafana/alerts.yml).
UP = 'up{job="popproxy"}'
DAY = 86400

Panel = tuple[str, str, str, str]  # title, expr (unscoped), unit, description

# The stat row at the top: is it up, which version, how busy, what needs doing soon.
# (title, expr, unit, description, legend) -- the version's legend is the value shown.
STATS: list[tuple[str, str, str, str, str]] = [
    ("Up", UP, "none",
     "1: Prometheus scraped popproxy's /metrics at the last scrape; 0: it did not (down, or "
     "the metrics port unreachable). Alert PopproxyDown.", "{{instance}}"),
    ("Version", "popproxy_build_info", "none",
     "The popproxy version each instance runs (popproxy_build_info{version}).", "{{version}}"),
    ("Sessions now", "sum(popproxy_active_sessions)", "short",
     "Client sessions in progress, all listeners.", "__auto"),
    ("Certificate days left",
     f"min((popproxy_tls_certificate_expiry_timestamp_seconds - time()) / {DAY})", "d",
     "Days until the first served certificate expires (re-read on SIGHUP). Alert "
     "PopproxyCertificateExpiring below 14 days.", "__auto"),
    ("Lockouts active", "sum(popproxy_lockouts_active)", "short",
     "Lockout counters blocking logins now (pair, source, account; this process's view).",
     "__auto"),
    ("Upstreams down", "sum(1 - popproxy_upstream_up)", "short",
     "Upstreams that did not greet with +OK at the last health probe (every 15 s, also without "
     "client traffic). Alert PopproxyUpstreamDown.", "__auto"),
]

ROWS: list[tuple[str, list[Panel]]] = [
    ("Traffic", [
        ("Connections by result", "sum by (result) (rate(popproxy_connections_total[5m]))",
         "ops", "New client connections per second: accepted, denied by address, over "
                "capacity, bad PROXY header."),
        ("Active sessions", "sum by (listener) (popproxy_active_sessions)", "short",
         "Client sessions in progress, by listener."),
        ("Bytes to clients", "sum(rate(popproxy_bytes_relayed_total[5m]))", "Bps",
         "Bytes relayed from upstreams to clients per second."),
        ("Session duration p90",
         "histogram_quantile(0.9, sum by (le) "
         "(rate(popproxy_session_duration_seconds_bucket[5m])))",
         "s", "90th percentile of session length (buckets up to an hour: idle clients stay "
              "until the autologout timer)."),
    ]),
    ("TLS", [
        ("Handshakes by version and result",
         "sum by (version, result) (rate(popproxy_tls_handshakes_total[5m]))", "ops",
         "Client TLS handshakes per second by TLS version and result."),
        ("Handshake failures by reason",
         "sum by (listener, reason) (rate(popproxy_tls_handshake_failures_total[5m]))", "ops",
         "Failed client handshakes per second: protocol_version (a client too old for the "
         "listener's minimum), no_shared_cipher, unknown_ca (the client does not trust our "
         "certificate), timeout, other."),
        ("Logins refused before TLS",
         "sum by (command) (rate(popproxy_login_before_tls_refused_total[5m]))", "ops",
         "USER/PASS/APOP/AUTH refused per second because the session had no TLS yet (a client "
         "configured without STLS)."),
        ("STLS injection attempts", "sum(rate(popproxy_stls_injection_attempts_total[5m]))",
         "ops", "Plaintext pipelined behind STLS per second (CVE-2011-0411 class): someone is "
                "tampering with the connection. Alert PopproxyStlsInjection."),
    ]),
    ("Authentication and lockouts", [
        ("Logins by result", "sum by (result) (rate(popproxy_logins_total[5m]))", "ops",
         "Login attempts per second by result. Alert PopproxyBruteForceSpike on failures."),
        ("Lockout blocks by scope", "sum by (scope) (rate(popproxy_lockout_blocks_total[5m]))",
         "ops", "Logins answered by a lockout per second, by counter scope."),
        ("Active lockouts", "sum by (scope) (popproxy_lockouts_active)", "short",
         "Lockout counters blocking logins now, by scope."),
        ("Lockout store errors",
         "sum by (operation) (rate(popproxy_redis_errors_total[5m]))", "ops",
         "Failed calls to the shared lockout store (Redis) per second."),
    ]),
    ("Policy", [
        ("Policy denials by stage", "sum by (stage) (rate(popproxy_policy_denials_total[5m]))",
         "ops", "Connections (connect) and logins (user) the policy denied, per second."),
        ("PROXY protocol rejects",
         "sum by (reason) (rate(popproxy_proxy_protocol_rejects_total[5m]))", "ops",
         "PROXY protocol headers refused per second, by reason."),
        ("Config reloads",
         "sum by (kind, result) (rate(popproxy_config_reloads_total[5m]))", "ops",
         "SIGHUP reloads per second by kind (policy, certificates) and result (ok, refused, "
         "unchanged). A refusal keeps the old configuration: see the log and audit log."),
    ]),
    ("Scanning", [
        ("Messages by verdict and action",
         "sum by (verdict, action) (rate(popproxy_messages_scanned_total[5m]))", "ops",
         "Messages scanned per second by verdict and the action taken."),
        ("Signals hit", "topk(10, sum by (signal) (rate(popproxy_scan_signals_total[5m])))",
         "ops", "The ten scanner signals firing most often, per second."),
        ("Scan duration p95",
         "histogram_quantile(0.95, sum by (le) "
         "(rate(popproxy_scan_duration_seconds_bucket[5m])))",
         "s", "95th percentile of the time to scan one message."),
        ("Verdict cache by result",
         "sum by (result) (rate(popproxy_verdict_cache_total[5m]))", "ops",
         "Verdict lookups per second by the level that answered."),
        # Issue 17: a feed or threshold change should show as "rescored", not "downloaded".
        ("Messages judged: downloaded vs re-scored",
         "sum by (how) (rate(popproxy_scan_judged_total[5m]))", "ops",
         "Messages judged at listing per second: downloaded and scanned, or re-scored from "
         "cached evidence (nothing read). After a feed update rescored should rise, not "
         "downloaded."),
        ("Bytes read from upstreams to judge",
         "sum(rate(popproxy_scan_judge_bytes_total[5m]))", "Bps",
         "Bytes per second read from upstreams only to judge messages (delivery is in Bytes "
         "to clients)."),
        # Issue 17: the first listing within scan.listing_budget; the rest judged at RETR.
        ("First listing time p95",
         "histogram_quantile(0.95, sum by (le) "
         "(rate(popproxy_scan_listing_seconds_bucket[5m])))", "s",
         "95th percentile of the time a session's first STAT/LIST spent judging its mailbox "
         "(budget: scan.listing_budget). Alert PopproxyListingNearBudget."),
        ("Messages left to RETR by the listing budget",
         "sum(rate(popproxy_scan_listing_deferred_total[5m]))", "ops",
         "Messages per second listed at the upstream's size because the listing budget was "
         "spent; judged at RETR/TOP."),
    ]),
    ("Upstreams", [
        ("Upstream up", "min by (upstream) (popproxy_upstream_up)", "short",
         "1 if the upstream greeted the health probe with +OK (every 15 s and on /readyz), "
         "0 if not. Alert PopproxyUpstreamDown after 3 minutes at 0."),
        ("Upstream errors by reason",
         "sum by (upstream, reason) (rate(popproxy_upstream_errors_total[5m]))", "ops",
         "Upstream failures during sessions per second, by upstream and reason."),
        ("Upstream login latency p95 by result",
         "histogram_quantile(0.95, sum by (le, upstream, result) "
         "(rate(popproxy_upstream_login_seconds_bucket[5m])))", "s",
         "95th percentile of connect + greeting + USER/PASS at each upstream, by result (ok, "
         "refused: wrong password, slowed by the server's failure delay; error)."),
    ]),
    ("Process", [
        ("CPU", "rate(process_cpu_seconds_total[5m])", "percentunit",
         "CPU time used per second (1 = one core), per process."),
        ("Resident memory", "process_resident_memory_bytes", "bytes",
         "Resident set size per process."),
        ("Open file descriptors", "process_open_fds / process_max_fds", "percentunit",
         "Open file descriptors as a share of the limit (LimitNOFILE): each session holds "
         "two sockets."),
    ]),
]

# A metric name not followed by "(" (a function), with its label matchers if any.
_SELECTOR = re.compile(r"\b(popproxy_\w+|process_\w+|up)\b(\{[^}]*\})?(?!\s*\()")


def scoped(expr: str) -> str:
    """``expr`` with ``instance=~"$instance"`` added to every metric selector."""

    def add(match: re.Match[str]) -> str:
        name, labels = match.group(1), match.group(2)
        inner = f"{INSTANCE}, {labels[1:-1]}" if labels else INSTANCE
        return f"{name}{{{inner}}}"

    return _SELECTOR.sub(add, expr)


def _target(expr: str, legend: str = "__auto") -> dict[str, Any]:
    return {"refId": "A", "datasource": DS, "expr": scoped(expr), "legendFormat": legend}


def panel(pid: int, spec: Panel, x: int, y: int) -> dict[str, Any]:
    title, expr, unit, description = spec
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": DS, "gridPos": {"h": 8, "w": 6, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [_target(expr)],
    }


def stat(pid: int, spec: tuple[str, str, str, str, str], x: int) -> dict[str, Any]:
    title, expr, unit, description, legend = spec
    return {
        "id": pid, "type": "stat", "title": title, "description": description,
        "datasource": DS, "gridPos": {"h": 4, "w": 4, "x": x, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    # The version is a label: show the series name (legend), not the 1.
                    "textMode": "name" if title == "Version" else "value",
                    "colorMode": "none", "graphMode": "none"},
        "targets": [_target(expr, legend)],
    }


def templating() -> dict[str, Any]:
    instances = "label_values(popproxy_build_info, instance)"
    return {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0},
        {"name": "instance", "label": "Instance", "type": "query", "datasource": DS,
         "query": {"query": instances, "refId": "instances"}, "definition": instances,
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
         "current": {}, "hide": 0},
    ]}


def build() -> dict[str, Any]:
    panels = [stat(index + 1, spec, index * 4) for index, spec in enumerate(STATS)]
    pid, y = len(panels) + 1, 4
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for index, spec in enumerate(row_panels):
            # Four panels a line: a row with more wraps instead of stacking them on one spot.
            panels.append(panel(pid, spec, (index % 4) * 6, y + index // 4 * 8))
            pid += 1
        y += 8 * -(-len(row_panels) // 4)
    return {
        "title": "popproxy", "uid": "popproxy", "schemaVersion": 38, "version": 2,
        "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "tags": ["popproxy", "pop3", "security"],
        "templating": templating(),
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("popproxy.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {out}")
