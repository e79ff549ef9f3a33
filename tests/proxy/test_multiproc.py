"""The supervisor's side of /metrics and the files made once per host (proxy/multiproc.py).

The summing is checked with real processes: two interpreters write their metrics the way
workers do (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported), one of
them exits, and the supervisor's registry must add counters, add live sessions, take the
maximum of lockouts, and forget the dead one's gauges once it is marked dead.
"""

from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trustme
from prometheus_client import CollectorRegistry

from popproxy.policy import Policy
from popproxy.proxy.multiproc import metrics_registry, prepare_shared_files, ready_line
from popproxy.proxy.supervisor import mark_dead

WORKER_SCRIPT = textwrap.dedent("""
    import sys
    from popproxy.metrics import Metrics
    m = Metrics()
    m.prepare_listener("pop3")
    m.connections.labels("pop3", "accepted").inc(int(sys.argv[1]))
    m.active_sessions.labels("pop3").set(int(sys.argv[2]))
    m.lockouts_active.labels("pair").set(int(sys.argv[3]))
    sys.stdout.write("done")
""")


def _worker(metrics_dir: Path, *values: int) -> int:
    """Run one "worker" to completion; its pid (the name of its metric files)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, *map(str, values)],
                            env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "done"
    return proc.pid


def test_the_supervisor_sums_workers_by_metric_kind(tmp_path: Path) -> None:
    first = _worker(tmp_path, 3, 2, 5)
    _worker(tmp_path, 4, 1, 7)
    registry, own = metrics_registry(tmp_path)
    value = registry.get_sample_value
    assert value("popproxy_connections_total", {"listener": "pop3", "result": "accepted"}) == 7
    assert value("popproxy_active_sessions", {"listener": "pop3"}) == 3  # livesum
    assert value("popproxy_lockouts_active", {"scope": "pair"}) == 7  # livemax
    assert value("popproxy_worker_restarts_total", {"reason": "signal"}) == 0  # its own
    own.worker_restarts.labels("signal").inc()
    assert value("popproxy_worker_restarts_total", {"reason": "signal"}) == 1

    mark_dead(first, tmp_path)  # a dead worker: its sessions are gone, its counts stay
    assert value("popproxy_active_sessions", {"listener": "pop3"}) == 1
    assert value("popproxy_connections_total", {"listener": "pop3", "result": "accepted"}) == 7


CERTIFICATE_WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from popproxy.metrics import Metrics
    from popproxy.proxy.tls import CertPair, certificate_expiry
    from popproxy.proxy.tls_metrics import publish_certificates
    m = Metrics()
    for served in sys.argv[1:]:  # a start, then reloads: the certificate files each serves
        expiries = {CertPair(Path(f), Path(f), ()): certificate_expiry(Path(f))
                    for f in served.split(",") if f}
        publish_certificates(m.tls_certificate_expiry, expiries)
    sys.stdout.write("done")
""")


def _expiries(registry: CollectorRegistry) -> dict[str, float]:
    return {sample.labels["name"]: sample.value for family in registry.collect()
            for sample in family.samples
            if sample.name == "popproxy_tls_certificate_expiry_timestamp_seconds"}


def test_a_certificate_no_worker_serves_leaves_the_supervisors_metrics(tmp_path: Path) -> None:
    """Regression (review): a worker's file cannot delete a series, so a certificate removed
    by a reload stayed in /metrics; now it goes once no worker serves it."""
    ca = trustme.CA()
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=90)
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    ca.issue_cert("a.example").cert_chain_pems[0].write_to_path(str(a))
    ca.issue_cert("b.example", not_after=later).cert_chain_pems[0].write_to_path(str(b))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    def worker(*publishes: str) -> None:
        done = subprocess.run([sys.executable, "-c", CERTIFICATE_WORKER, *publishes], env=env,
                              capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout == "done"

    worker(f"{a},{b}", f"{a}")  # started with both, reloaded without b
    worker(f"{a},{b}", f"{a}")
    registry, _ = metrics_registry(metrics_dir)
    assert set(_expiries(registry)) == {"a"}
    worker(f"{a},{b}")  # a worker still serving b (it kept the old policy): b is shown
    assert _expiries(registry)["b"] == pytest.approx(later.timestamp(), abs=1)
    assert all(math.isfinite(value) for value in _expiries(registry).values())


def _policy(tmp_path: Path, mode: str, lockout: bool) -> Policy:
    return Policy.model_validate({
        "listeners": [{"name": "a", "host": "127.0.0.1", "port": 9995, "mode": mode,
                       "allow_plaintext_login": mode == "plain"}],
        "state_dir": str(tmp_path / "state"), "lockout": {"enabled": lockout}})


def test_shared_files_are_made_once_before_the_workers(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "tls", True)
    prepare_shared_files(policy)
    state = tmp_path / "state"
    cert, key = (state / "selfsigned.crt").read_bytes(), sorted(p.name for p in state.iterdir())
    prepare_shared_files(policy)  # a second run (a restart) reuses them
    assert (state / "selfsigned.crt").read_bytes() == cert
    assert sorted(p.name for p in state.iterdir()) == key
    assert any("lockout" in name for name in key)


def test_plain_listeners_without_lockouts_need_no_files(tmp_path: Path) -> None:
    prepare_shared_files(_policy(tmp_path, "plain", False))
    assert not (tmp_path / "state").exists()


def test_ready_line_names_the_bound_ports_and_the_workers(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "tls", False)
    assert ready_line(policy, {"a": 40001}, 2) == (
        "popproxy ready: a=127.0.0.1:40001 (tls); 2 workers")
