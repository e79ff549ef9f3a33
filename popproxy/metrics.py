"""Every Prometheus metric of popproxy, declared in one table.

Names follow ``popproxy_*_total`` (counters), ``popproxy_*_seconds`` (histograms) and plain
gauges.  Label values come from small fixed sets (listener names, results, reasons); never
usernames, IP addresses or URLs.  The registry is injected, so tests get a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class _Def:
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # histograms only; None: the client's default


# popproxy_scan_listing_seconds: fine below 1 s (a cached mailbox), then up to and past the
# 20 s default budget and common client timeouts (60 s).
LISTING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0,
                   120.0)

# attribute name -> definition.  The one place a metric is declared.
DEFINITIONS: dict[str, _Def] = {
    "connections": _Def(Counter, "popproxy_connections_total",
                        "Client connections by listener and result", ("listener", "result")),
    "active_sessions": _Def(Gauge, "popproxy_active_sessions", "Sessions in progress",
                            ("listener",)),
    "session_duration": _Def(Histogram, "popproxy_session_duration_seconds",
                             "Session lifetime", ("listener",)),
    "tls_handshakes": _Def(Counter, "popproxy_tls_handshakes_total",
                           "Client TLS handshakes by kind, version and result",
                           ("kind", "version", "result")),
    "stls_injections": _Def(Counter, "popproxy_stls_injection_attempts_total",
                            "STLS with plaintext pipelined behind it (CVE-2011-0411 class)"),
    "login_before_tls": _Def(Counter, "popproxy_login_before_tls_refused_total",
                             "Login commands refused because TLS was not active", ("command",)),
    "logins": _Def(Counter, "popproxy_logins_total", "Login attempts by result", ("result",)),
    "lockouts_active": _Def(Gauge, "popproxy_lockouts_active",
                            "Counters currently blocking logins", ("scope",)),
    "lockout_blocks": _Def(Counter, "popproxy_lockout_blocks_total",
                           "Login attempts answered by a lockout", ("scope",)),
    "policy_denials": _Def(Counter, "popproxy_policy_denials_total",
                           "Policy decisions that denied", ("stage",)),
    "proxy_protocol_rejects": _Def(Counter, "popproxy_proxy_protocol_rejects_total",
                                   "PROXY protocol headers refused", ("reason",)),
    "upstream_errors": _Def(Counter, "popproxy_upstream_errors_total",
                            "Upstream failures by reason", ("upstream", "reason")),
    "upstream_login_seconds": _Def(Histogram, "popproxy_upstream_login_seconds",
                                   "Connect + greeting + USER/PASS at the upstream",
                                   ("upstream",)),
    "bytes_relayed": _Def(Counter, "popproxy_bytes_relayed_total",
                          "Bytes passed between client and upstream", ("direction",)),
    "messages_scanned": _Def(Counter, "popproxy_messages_scanned_total",
                             "Messages scanned by verdict and action", ("verdict", "action")),
    "signals_hit": _Def(Counter, "popproxy_scan_signals_total", "Scanner signals that fired",
                        ("signal",)),
    "scan_duration": _Def(Histogram, "popproxy_scan_duration_seconds", "Time to scan a message"),
    "scan_worker_kills": _Def(Counter, "popproxy_scan_worker_kills_total",
                              "Scan worker processes killed and replaced, by reason "
                              "(timeout: a job ran past its deadline; crash: the worker died)",
                              ("reason",)),
    "config_reloads": _Def(Counter, "popproxy_config_reloads_total", "Policy/TLS reloads",
                           ("result",)),
    "redis_errors": _Def(Counter, "popproxy_redis_errors_total", "Failed lockout-store calls",
                         ("operation",)),
    "verdict_cache": _Def(Counter, "popproxy_verdict_cache_total",
                          "Verdict lookups by the level that answered (local_hit, shared_hit, "
                          "stale: judged under older feeds/thresholds, re-scored; miss: judged "
                          "now); shared_error: a lookup or write without Redis",
                          ("result",)),
    "scan_judged": _Def(Counter, "popproxy_scan_judged_total",
                        "Messages judged at listing: downloaded (read from the upstream and "
                        "scanned) or rescored (from cached evidence, nothing read)", ("how",)),
    "scan_judge_bytes": _Def(Counter, "popproxy_scan_judge_bytes_total",
                             "Bytes read from upstreams to judge messages"),
    # Buckets around scan.listing_budget (default 20 s): the alert compares p95 with it.
    "scan_listing_seconds": _Def(Histogram, "popproxy_scan_listing_seconds",
                                 "Time a session's first STAT/LIST spent judging its mailbox",
                                 buckets=LISTING_BUCKETS),
    "scan_listing_deferred": _Def(Counter, "popproxy_scan_listing_deferred_total",
                                  "Messages listed at the upstream's size because the listing "
                                  "budget was spent: judged at RETR/TOP, delivered size-kept"),
    # PopproxyListingNearBudget compares the listing p95 with this, so the alert follows the
    # configured budget instead of a number copied into the rule.
    "scan_listing_budget": _Def(Gauge, "popproxy_scan_listing_budget_seconds",
                                "The configured scan.listing_budget (0 while scanning is off)"),
}


# Label values known in advance: their series exist at 0 from the start, so the first event
# shows up in rate()/increase() (Prometheus needs a previous sample) and panels show 0, not
# "No data".  Values that depend on the policy (listener, upstream) are added by the server.
KNOWN_LABELS: dict[str, list[tuple[str, ...]]] = {
    "logins": [(r,) for r in ("ok", "bad_credentials", "locked", "policy_denied",
                              "upstream_error", "upstream_refused", "malformed",
                              "store_unavailable", "timeout")],
    "policy_denials": [("connect",), ("user",)],
    "proxy_protocol_rejects": [(r,) for r in ("untrusted_peer", "malformed", "timeout",
                                              "closed")],
    "lockout_blocks": [("pair",), ("source",), ("account",)],
    "lockouts_active": [("pair",), ("source",), ("account",)],
    "config_reloads": [("ok",), ("refused",)],
    "scan_worker_kills": [("timeout",), ("crash",)],
    "messages_scanned": [("clean", "pass"), ("flagged", "tag"), ("flagged", "defang"),
                         ("flagged", "quarantine"), ("unscanned", "tag"),
                         ("unscanned", "defang"), ("unscanned", "quarantine")],
    "login_before_tls": [(c,) for c in ("USER", "PASS", "APOP", "AUTH")],
    "redis_errors": [(o,) for o in ("counts", "record_failure", "record_success")],
    "verdict_cache": [(r,) for r in ("local_hit", "shared_hit", "stale", "miss",
                                     "shared_error")],
    "scan_judged": [("downloaded",), ("rescored",)],
    "bytes_relayed": [("to_client",)],
}


class Metrics:
    """All metrics, registered in ``registry`` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        for attribute, d in DEFINITIONS.items():
            name = d.name.removesuffix("_total") if d.kind is Counter else d.name
            metric: Counter | Gauge | Histogram = (
                Histogram(name, d.help, d.labels, registry=self.registry, buckets=d.buckets)
                if d.buckets is not None else
                d.kind(name, d.help, d.labels, registry=self.registry))
            for values in KNOWN_LABELS.get(attribute, []):
                metric.labels(*values)
            setattr(self, attribute, metric)

    def prepare_listener(self, listener: str) -> None:
        """Create a listener's series at 0 (see KNOWN_LABELS)."""
        for result in ("accepted", "denied", "over_capacity", "proxy_protocol"):
            self.connections.labels(listener, result)
        self.active_sessions.labels(listener)

    def prepare_upstream(self, upstream: str) -> None:
        for reason in ("connect", "greeting", "timeout", "tls", "tls_verify", "protocol", "read",
                       "closed", "stls"):
            self.upstream_errors.labels(upstream, reason)

    # Typed accessors (mypy cannot see setattr): thin and obvious.
    connections: Counter
    active_sessions: Gauge
    session_duration: Histogram
    tls_handshakes: Counter
    stls_injections: Counter
    login_before_tls: Counter
    logins: Counter
    lockouts_active: Gauge
    lockout_blocks: Counter
    policy_denials: Counter
    proxy_protocol_rejects: Counter
    upstream_errors: Counter
    upstream_login_seconds: Histogram
    bytes_relayed: Counter
    messages_scanned: Counter
    signals_hit: Counter
    scan_duration: Histogram
    scan_worker_kills: Counter
    config_reloads: Counter
    redis_errors: Counter
    verdict_cache: Counter
    scan_judged: Counter
    scan_judge_bytes: Counter
    scan_listing_seconds: Histogram
    scan_listing_deferred: Counter
    scan_listing_budget: Gauge
