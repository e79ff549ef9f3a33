"""Every Prometheus metric of popproxy, declared in one table.

Names follow ``popproxy_*_total`` (counters), ``popproxy_*_seconds`` (histograms) and plain
gauges.  Label values come from small fixed sets (listener names, results, reasons); never
usernames, IP addresses or URLs.  The registry is injected, so tests get a fresh one.

With several worker processes (``workers:``, docs/scaling.md) each worker writes its values
to prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by the
supervisor) and the supervisor's /metrics sums them: counters and histograms add up, each
gauge says how (``multiprocess_mode``).  One process keeps its plain in-memory registry.
"""

from __future__ import annotations

import functools
import operator
import os
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client import values as prometheus_values

from popproxy import __version__

# No ``*_created`` series: one more series per counter and histogram child that nobody queries
# (Prometheus derives resets itself), doubling what an admin scrolls through in /metrics.
# A process-wide switch of prometheus_client, thrown once when metrics are first imported.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped in prometheus_client)

# In multiprocess mode prometheus_client asks os.getpid() at every update to notice a fork (a
# system call each: ~47 per login in a worker).  The pid is cached instead and renewed in a
# forked child (os.register_at_fork), which is all that check needs.  Set before any metric
# exists: a value's class is chosen when the metric is made.
# The identifier is a C-level callable (a partial of getitem), not a lambda: no Python frame
# at each of a login's ~12 value writes.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    prometheus_values.ValueClass = prometheus_values.MultiProcessValue(  # type: ignore[no-untyped-call]
        functools.partial(operator.getitem, _PID, 0))


@dataclass(frozen=True)
class _Def:
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # histograms only; None: the client's default
    # Gauges only: how the supervisor combines the workers' values (prometheus_client's
    # multiprocess modes; "live": a dead worker's value is dropped, see mark_process_dead).
    multiprocess_mode: str = "livesum"


# popproxy_scan_listing_seconds: fine below 1 s (a cached mailbox), then up to and past the
# 20 s default budget and common client timeouts (60 s).
LISTING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0,
                   120.0)
# popproxy_session_duration_seconds: a poll is over in well under a second, a big download takes
# minutes, and a client that keeps its session open sits until limits.idle_timeout (RFC 1939
# section 3: the autologout timer is at least 10 minutes, hence 600 s) or longer.  The client's
# default buckets stop at 10 s, which put every long session in +Inf.
SESSION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                   3600.0)
# popproxy_upstream_login_seconds: a local Dovecot answers in milliseconds; failed logins are
# slowed by the server's own auth failure delay (Dovecot: 2 s), and connect/greeting timeouts
# are tens of seconds.
LOGIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Why an upstream login ended, the ``result`` label of popproxy_upstream_login_seconds: fast
# refusals must not hide slow successes in one percentile.
LOGIN_RESULTS = ("ok", "refused", "error")
# Why a client TLS handshake failed (popproxy_tls_handshake_failures_total; see
# proxy/tls_metrics.py for the mapping from OpenSSL's reasons).
TLS_FAILURE_REASONS = ("protocol_version", "no_shared_cipher", "unknown_ca", "timeout", "other")

# attribute name -> definition.  The one place a metric is declared.
DEFINITIONS: dict[str, _Def] = {
    "connections": _Def(Counter, "popproxy_connections_total",
                        "Client connections by listener and result", ("listener", "result")),
    "active_sessions": _Def(Gauge, "popproxy_active_sessions", "Sessions in progress",
                            ("listener",)),
    "session_duration": _Def(Histogram, "popproxy_session_duration_seconds",
                             "Session lifetime", ("listener",), buckets=SESSION_BUCKETS),
    "tls_handshakes": _Def(Counter, "popproxy_tls_handshakes_total",
                           "Client TLS handshakes by kind, version and result",
                           ("kind", "version", "result")),
    "tls_handshake_failures": _Def(Counter, "popproxy_tls_handshake_failures_total",
                                   "Failed client TLS handshakes by listener and reason",
                                   ("listener", "reason")),
    "tls_certificate_expiry": _Def(Gauge, "popproxy_tls_certificate_expiry_timestamp_seconds",
                                   "notAfter of each served certificate (Unix time), by the "
                                   "certificate file's name", ("name",),
                                   multiprocess_mode="livemin"),  # the soonest expiry wins
    "stls_injections": _Def(Counter, "popproxy_stls_injection_attempts_total",
                            "STLS with plaintext pipelined behind it (CVE-2011-0411 class)"),
    "login_before_tls": _Def(Counter, "popproxy_login_before_tls_refused_total",
                             "Login commands refused because TLS was not active", ("command",)),
    "logins": _Def(Counter, "popproxy_logins_total", "Login attempts by result", ("result",)),
    # livemax, not livesum: each worker counts the blocks its own logins met in the shared
    # store, and the same block met through two workers would be counted twice by a sum.  The
    # max is a lower bound of the host's blocks (a block only one worker met still shows).
    "lockouts_active": _Def(Gauge, "popproxy_lockouts_active",
                            "Counters currently blocking logins", ("scope",),
                            multiprocess_mode="livemax"),
    "lockout_blocks": _Def(Counter, "popproxy_lockout_blocks_total",
                           "Login attempts answered by a lockout", ("scope",)),
    "policy_denials": _Def(Counter, "popproxy_policy_denials_total",
                           "Policy decisions that denied", ("stage",)),
    "proxy_protocol_rejects": _Def(Counter, "popproxy_proxy_protocol_rejects_total",
                                   "PROXY protocol headers refused", ("reason",)),
    "upstream_errors": _Def(Counter, "popproxy_upstream_errors_total",
                            "Upstream failures by reason", ("upstream", "reason")),
    "upstream_login_seconds": _Def(Histogram, "popproxy_upstream_login_seconds",
                                   "Connect + greeting + USER/PASS at the upstream, by result "
                                   "(ok, refused: -ERR to the login, error: no answer)",
                                   ("upstream", "result"), buckets=LOGIN_BUCKETS),
    "upstream_up": _Def(Gauge, "popproxy_upstream_up",
                        "1 if the upstream answered the last health probe with a POP3 +OK "
                        "greeting, else 0", ("upstream",),
                        # With workers only the supervisor probes (SupervisorMetrics.upstream_up)
                        multiprocess_mode="livemax"),
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
    "config_reloads": _Def(Counter, "popproxy_config_reloads_total",
                           "Reloads by kind (policy, certificates) and result (ok, refused, "
                           "unchanged: the policy files say what is in force)",
                           ("kind", "result")),
    "build_info": _Def(Gauge, "popproxy_build_info", "Always 1; the running version as a label",
                       ("version",), multiprocess_mode="livemax"),
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
    # Issue 19 item 12: oversize messages apart from scanner failures, so the fail-open alert
    # looks only at failures (a mailbox of big attachments is not an incident).
    "scan_unscanned": _Def(Counter, "popproxy_scan_unscanned_total",
                           "Messages not scanned whole, by reason: too_large (over "
                           "scan.max_message_bytes, judged on their head), time_budget (killed "
                           "at the deadline or crashed worker), error (scanner error or no "
                           "worker)", ("reason",)),
    # PopproxyListingNearBudget compares the listing p95 with this, so the alert follows the
    # configured budget instead of a number copied into the rule.
    "scan_listing_budget": _Def(Gauge, "popproxy_scan_listing_budget_seconds",
                                "The configured scan.listing_budget (0 while scanning is off)",
                                multiprocess_mode="livemin"),  # every worker sets the same
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
    "config_reloads": [("policy", "ok"), ("policy", "refused"), ("policy", "unchanged"),
                       ("certificates", "ok"), ("certificates", "refused")],
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
    "scan_unscanned": [(r,) for r in ("too_large", "time_budget", "error")],
}


_M = TypeVar("_M", Counter, Gauge, Histogram)


class Metrics:
    """All metrics, registered in ``registry`` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # (metric, label values) -> child, for ``child``: bounded, since label values come
        # from small fixed sets (module docstring), never from what a client sends.
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}
        for attribute, d in DEFINITIONS.items():
            name = d.name.removesuffix("_total") if d.kind is Counter else d.name
            metric: Counter | Gauge | Histogram
            if d.buckets is not None:
                metric = Histogram(name, d.help, d.labels, registry=self.registry,
                                   buckets=d.buckets)
            elif d.kind is Gauge:
                metric = Gauge(name, d.help, d.labels, registry=self.registry,
                               multiprocess_mode=d.multiprocess_mode)  # type: ignore[arg-type]
            else:
                metric = d.kind(name, d.help, d.labels, registry=self.registry)
            for values in KNOWN_LABELS.get(attribute, []):
                metric.labels(*values)
            setattr(self, attribute, metric)
        self.build_info.labels(__version__).set(1)
        # CPU seconds, RSS, open fds, start time (process_*) and python_info, on our registry
        # (the default one is never served).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, looked up once: ``labels()`` checks its arguments,
        converts them and takes a lock on every call, and a login makes about seven (a dict
        look-up instead: issue 18, CPU per TLS session).  Not for a metric whose children
        are removed (``clear``/``remove``): the memo would keep a detached child."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]  # (stored as object: one dict for 3 kinds)

    def prepare_listener(self, listener: str) -> None:
        """Create a listener's series at 0 (see KNOWN_LABELS)."""
        for result in ("accepted", "denied", "over_capacity", "proxy_protocol", "shutting_down"):
            self.connections.labels(listener, result)
        self.active_sessions.labels(listener)
        for reason in TLS_FAILURE_REASONS:
            self.tls_handshake_failures.labels(listener, reason)

    def prepare_upstream(self, upstream: str) -> None:
        for reason in ("connect", "greeting", "timeout", "tls", "tls_verify", "protocol", "read",
                       "closed", "stls"):
            self.upstream_errors.labels(upstream, reason)
        for result in LOGIN_RESULTS:
            self.upstream_login_seconds.labels(upstream, result)

    # Typed accessors (mypy cannot see setattr): thin and obvious.
    connections: Counter
    active_sessions: Gauge
    session_duration: Histogram
    tls_handshakes: Counter
    tls_handshake_failures: Counter
    tls_certificate_expiry: Gauge
    stls_injections: Counter
    login_before_tls: Counter
    logins: Counter
    lockouts_active: Gauge
    lockout_blocks: Counter
    policy_denials: Counter
    proxy_protocol_rejects: Counter
    upstream_errors: Counter
    upstream_login_seconds: Histogram
    upstream_up: Gauge
    bytes_relayed: Counter
    messages_scanned: Counter
    signals_hit: Counter
    scan_duration: Histogram
    scan_worker_kills: Counter
    config_reloads: Counter
    build_info: Gauge
    redis_errors: Counter
    verdict_cache: Counter
    scan_judged: Counter
    scan_judge_bytes: Counter
    scan_listing_seconds: Histogram
    scan_listing_deferred: Counter
    scan_unscanned: Counter
    scan_listing_budget: Gauge


# The supervisor's own metrics (workers > 1): served next to the workers' summed ones, never
# declared by a worker (the same name from both would be two families in one exposition).
SUPERVISOR_DEFINITIONS: dict[str, _Def] = {
    "worker_restarts": _Def(Counter, "popproxy_worker_restarts_total",
                            "Worker processes that died and were started again, by how they "
                            "ended (exit: an exit status; signal: killed)", ("reason",)),
    "reloads": _Def(Counter, "popproxy_supervisor_reloads_total",
                    "SIGHUP reloads as the supervisor saw them: ok (every worker applied it), "
                    "refused (invalid: not forwarded), worker_refused (a worker refused it or "
                    "did not answer; the reload is reported failed)", ("result",)),
    "workers": _Def(Gauge, "popproxy_workers", "Worker processes running"),
}


class SupervisorMetrics:
    """The supervisor's metrics, registered in ``registry`` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        d = SUPERVISOR_DEFINITIONS
        self.worker_restarts = Counter(d["worker_restarts"].name.removesuffix("_total"),
                                       d["worker_restarts"].help, d["worker_restarts"].labels,
                                       registry=self.registry)
        for reason in ("exit", "signal"):
            self.worker_restarts.labels(reason)
        self.reloads = Counter(d["reloads"].name.removesuffix("_total"), d["reloads"].help,
                               d["reloads"].labels, registry=self.registry)
        for result in ("ok", "refused", "worker_refused"):
            self.reloads.labels(result)
        self.workers = Gauge(d["workers"].name, d["workers"].help, registry=self.registry)
        # A policy the supervisor refuses reaches no worker, so none counts it: counted here,
        # in ``merged``, whose families /metrics adds to the workers' families of the same
        # name (multiproc.py; two families of one name would be two TYPE lines, invalid).
        self.merged = CollectorRegistry()
        reloads = DEFINITIONS["config_reloads"]
        self.config_reloads = Counter(reloads.name.removesuffix("_total"), reloads.help,
                                      reloads.labels, registry=self.merged)
        self.config_reloads.labels("policy", "refused")
        self.config_reloads.labels("certificates", "refused")
        # The upstream health probe runs here, once per host, not in every worker (a worker
        # never sets this family, so the summed worker metrics do not carry it).
        up = DEFINITIONS["upstream_up"]
        self.upstream_up = Gauge(up.name, up.help, up.labels, registry=self.registry)
