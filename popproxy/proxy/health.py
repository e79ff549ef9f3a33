"""Upstream health: does each upstream greet with ``+OK`` (RFC 1939 section 4)?

A TCP connect says little about a POP3 server: a Dovecot whose auth process is wedged, or a
load balancer with no backend, still accepts connections.  The probe opens each upstream the
way a session does (plain, STLS or implicit TLS, certificate checked, see ``upstream.py``),
reads the greeting and closes.  It never logs in and never sends QUIT (the house rule: an
upstream sees QUIT only from a client).

The upstreams are those of the policy in force when the probe runs, so ``/readyz`` and
``popproxy_upstream_up{upstream}`` follow SIGHUP reloads.  The same results feed both: a
background loop every ``PROBE_INTERVAL`` (the alert works on a proxy without clients), and
``/readyz`` asks at most every ``PROBE_CACHE_SECONDS`` (a scrape storm does not hammer the
legacy server; concurrent requests wait for the one probe in flight).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Gauge

from popproxy.policy import Policy, Upstream
from popproxy.policy.decisions import DEFAULT_UPSTREAM
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError

log = logging.getLogger("popproxy.health")

# Seconds for connect + TLS + greeting.  A healthy server greets in milliseconds; an orchestrator
# calls /readyz with a short timeout of its own (Kubernetes: 1 s by default, then retries).
PROBE_TIMEOUT = 2.0
# Results are reused this long: /readyz hit by several balancers and a scrape storm costs the
# legacy server at most one connection per upstream per this many seconds.
PROBE_CACHE_SECONDS = 5.0
# Background probe period: PopproxyUpstreamDown (grafana/alerts.yml, "for: 3m") sees about 12
# probes before it fires, so one lost greeting does not page anyone.
PROBE_INTERVAL = 15.0

Greeter = Callable[[Upstream, ssl.SSLContext | None], Awaitable[None]]


class UpGauge(Protocol):
    """Where results go: ``Metrics`` in one process, ``SupervisorMetrics`` with workers."""

    upstream_up: Gauge


class ProbeTarget(Protocol):
    """What the probe reads, at each probe, from the server (``ProxyServer``)."""

    @property
    def config(self) -> Policy: ...

    @property
    def upstream_tls(self) -> dict[str, ssl.SSLContext | None]: ...


async def greet(settings: Upstream, tls: ssl.SSLContext | None) -> None:
    """Connect, secure per ``settings.mode``, read ``+OK``, close (no QUIT, no login).

    Raises ``UpstreamError`` (or ``OSError``/``TimeoutError``) when the upstream is not usable.
    """
    connection = await UpstreamConnection.open(settings, tls)
    connection.close()


class UpstreamProbe:
    """Probes every upstream of the current policy; ``ready()`` for /readyz."""

    def __init__(self, target: ProbeTarget, metrics: UpGauge, *, greeter: Greeter = greet,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._metrics = metrics
        self._greet = greeter
        self._clock = clock
        self._lock = asyncio.Lock()
        self._checked_at = -math.inf
        self._results: dict[str, bool] = {}

    async def ready(self) -> bool:
        """Every upstream greeted at the last probe (at most ``PROBE_CACHE_SECONDS`` old)."""
        results = await self.check()
        return bool(results) and all(results.values())

    async def check(self) -> dict[str, bool]:
        """Upstream name -> greeted with +OK; probes again once the cached results are old."""
        async with self._lock:  # requests arriving during a probe wait for its results
            if self._clock() - self._checked_at < PROBE_CACHE_SECONDS:
                return dict(self._results)
            policy, contexts = self._target.config, self._target.upstream_tls
            upstreams = {DEFAULT_UPSTREAM: policy.upstream, **policy.upstreams}
            names = list(upstreams)
            outcomes = await asyncio.gather(
                *(self._probe(name, upstreams[name], contexts.get(name)) for name in names))
            results = dict(zip(names, outcomes, strict=True))
            self._publish(results)
            self._results, self._checked_at = results, self._clock()
            return dict(results)

    async def run(self, interval: float = PROBE_INTERVAL) -> None:
        """Probe every ``interval`` seconds until cancelled (spawned next to the ops server)."""
        while True:
            await self.check()
            await asyncio.sleep(interval)

    async def _probe(self, name: str, settings: Upstream, tls: ssl.SSLContext | None) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._greet(settings, tls)
        except (UpstreamError, OSError, TimeoutError) as exc:
            if self._results.get(name, True):  # log the change, not every probe
                log.warning("upstream %s is down: %s", name, _why(exc))
            return False
        if not self._results.get(name, False) and name in self._results:
            log.info("upstream %s is up again", name)
        return True

    def _publish(self, results: dict[str, bool]) -> None:
        """popproxy_upstream_up: 1/0 per upstream; upstreams a reload removed lose their
        series (an alert for a server nobody routes to would be noise)."""
        gauge = self._metrics.upstream_up
        for gone in set(self._results) - set(results):
            gauge.remove(gone)
        for name, up in results.items():
            gauge.labels(name).set(1 if up else 0)


def _why(exc: Exception) -> str:
    """``connect (connect failed: ConnectionRefusedError)``, ``timeout``: for the log."""
    if isinstance(exc, UpstreamError):
        return f"{exc.reason} ({exc})"
    if isinstance(exc, TimeoutError):
        return f"timeout (no greeting within {PROBE_TIMEOUT:g} s)"
    return f"{type(exc).__name__} ({exc})"
