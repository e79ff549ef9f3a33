"""The supervisor's side of /metrics and the files made once per host (proxy/multiproc.py).

The summing is checked with real processes: two interpreters write their metrics the way
workers do (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported), one of
them exits, and the supervisor's registry must add counters, add live sessions, take the
maximum of lockouts, and forget the dead one's gauges once it is marked dead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
