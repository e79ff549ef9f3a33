"""``popproxy run`` with ``workers`` > 1: the supervisor process's whole life.

Everything that must exist once per host happens here, before any worker starts: the demo
upstream, the self-signed certificate and the lockout key (made once, then read by every
worker, rather than raced for), the listening sockets, and the ops HTTP server whose /metrics
sums the workers' metrics (prometheus_client's multiprocess mode: the workers write to a
private directory made here and removed at exit).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import ssl
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, PlatformCollector, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from popproxy.auditlog import open_audit_log
from popproxy.metrics import SupervisorMetrics
from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.health import UpstreamProbe
from popproxy.proxy.host_process import HostProcessCollector
from popproxy.proxy.http import OpsServer
from popproxy.proxy.lockout_guard import load_secret
from popproxy.proxy.sdnotify import Notifier, report_status
from popproxy.proxy.supervisor import ReleaseWorker, Supervisor, no_release
from popproxy.proxy.tasks import spawn
from popproxy.proxy.tls import ServerTls, certificate_line, upstream_contexts
from popproxy.proxy.tls_metrics import without_unserved

log = logging.getLogger("popproxy.supervisor")


class SupervisedPolicy:
    """What the upstream probe reads (``health.ProbeTarget``): the policy the supervisor holds
    now (it follows reloads) and that policy's upstream TLS contexts, built once per policy."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._built_for: Policy | None = None
        self._contexts: dict[str, ssl.SSLContext | None] = {}

    @property
    def config(self) -> Policy:
        return self._supervisor.config

    @property
    def upstream_tls(self) -> dict[str, ssl.SSLContext | None]:
        if self._built_for is not self._supervisor.config:
            self._contexts = upstream_contexts(self._supervisor.config)
            self._built_for = self._supervisor.config
        return self._contexts


class WorkersCollector:
    """Every worker's values combined (prometheus_client's multiprocess files), without the
    series the workers marked as gone (tls_metrics.NOT_SERVED: the files cannot delete one),
    plus the supervisor's counts of the same families (``merged``: SupervisorMetrics)."""

    def __init__(self, metrics_dir: Path, merged: CollectorRegistry | None = None) -> None:
        self._files = multiprocess.MultiProcessCollector(None, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        self._merged = merged

    def collect(self) -> Iterator[Metric]:
        families = without_unserved(self._files.collect())  # type: ignore[no-untyped-call]
        if self._merged is None:
            return families
        return added(families, self._merged.collect())


def added(families: Iterable[Metric], own: Iterable[Metric]) -> Iterator[Metric]:
    """``families`` with ``own``'s samples added to those of the same name and labels, one
    family per name (for counters only: their sum is the host's count)."""
    extra = {family.name: family for family in own}
    for family in families:
        mine = extra.pop(family.name, None)
        if mine is not None:
            totals: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
            for sample in [*family.samples, *mine.samples]:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                before = totals.get(key)
                totals[key] = sample if before is None else before._replace(
                    value=before.value + sample.value)
            family.samples = list(totals.values())
        yield family
    yield from extra.values()  # no worker has written that family yet


def metrics_registry(metrics_dir: Path) -> tuple[CollectorRegistry, SupervisorMetrics]:
    """The supervisor's /metrics: every worker's values combined, plus its own."""
    registry = CollectorRegistry()
    metrics = SupervisorMetrics(registry)
    registry.register(WorkersCollector(metrics_dir, metrics.merged))
    return registry, metrics


def prepare_shared_files(config: Policy) -> None:
    """Files that workers would otherwise all try to create at once: made here, once."""
    if any(lst.mode != "plain" for lst in config.listeners):
        for pair in ServerTls(config.tls, config.state_dir).pairs:
            print(certificate_line(pair.cert), flush=True)
    if config.lockout.enabled:
        load_secret(config.lockout, config.state_dir)


def ready_line(config: Policy, ports: dict[str, int], workers: int) -> str:
    return "popproxy ready: " + ", ".join(
        f"{lst.name}={lst.host}:{ports[lst.name]} ({lst.mode})" for lst in config.listeners
    ) + f"; {workers} workers"


async def serve_workers(config: Policy, config_path: Path, workers: int,
                        worker_options: list[str], stop: asyncio.Event,
                        notifier: Notifier | None = None,
                        release_worker: ReleaseWorker = no_release) -> None:
    """Run the supervisor until ``stop`` is set, then drain every worker."""
    notifier = Notifier() if notifier is None else notifier
    metrics_dir = Path(tempfile.mkdtemp(prefix="popproxy-metrics-"))  # 0700, ours alone
    demo: DemoUpstream | None = None
    ops: OpsServer | None = None
    probing: asyncio.Task[None] | None = None
    try:
        if config.demo_upstream.enabled:
            demo = DemoUpstream()
            await demo.start(config.upstream.host, config.upstream.port)
            log.warning("demo upstream on %s:%d (demo mailbox, see README): not for "
                        "production", config.upstream.host, demo.port)
        prepare_shared_files(config)
        registry, metrics = metrics_registry(metrics_dir)
        supervisor = Supervisor(config, config_path, workers, worker_options, metrics,
                                metrics_dir, notifier, release_worker,
                                open_audit_log(config.observability.audit_log))
        registry.register(HostProcessCollector(lambda: supervisor.pids))
        PlatformCollector(registry=registry)
        if config.observability.metrics_port is not None:
            probe = UpstreamProbe(SupervisedPolicy(supervisor), metrics)  # once per host
            ops = OpsServer(registry, probe.ready)
            await ops.start(config.observability.metrics_host,
                            config.observability.metrics_port)
            probing = spawn(probe.run(), "upstream-probe")
        await _supervise(supervisor, stop)
    finally:
        if probing is not None:
            probing.cancel()
        if ops is not None:
            await ops.stop()
        if demo is not None:
            await demo.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("stopped")  # every worker drained or killed: the journal's last word


async def _supervise(supervisor: Supervisor, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: spawn(supervisor.reload(), "reload"))
    loop.add_signal_handler(signal.SIGUSR1, supervisor.reopen_logs)
    try:
        await supervisor.start()
        print(ready_line(supervisor.config, supervisor.ports, len(supervisor.slots)),
              flush=True)
        supervisor.notifier.ready(supervisor.status())  # every worker accepts
        status = spawn(report_status(supervisor.notifier, supervisor.status), "sd-status")
        await stop.wait()
        status.cancel()
        log.info("shutting down: draining %d workers", len(supervisor.pids))
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.remove_signal_handler(signal.SIGUSR1)
        await supervisor.stop()
