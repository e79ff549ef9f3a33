"""The supervisor (proxy/supervisor.py): worker count, sockets, backoff, reload validation, and
the restart path with its ``release_worker`` hook on real worker processes.

The end-to-end behaviour (Dovecot, SIGKILL mid-session, drain, reload) is in
tests/integration/test_workers.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from popproxy.auditlog import AuditLog
from popproxy.metrics import SupervisorMetrics
from popproxy.policy import Policy, load_config
from popproxy.proxy import supervisor as sup
from popproxy.proxy.listen_group import bind_listeners
from popproxy.proxy.multiproc import metrics_registry
from popproxy.proxy.sdnotify import Notifier
from popproxy.proxy.supervisor import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    STABLE_AFTER,
    Slot,
    Supervisor,
    resolve_workers,
    validate_reload,
)
from tests.support.ports import free_port, queued_connections


def _policy_text(port: int, tmp_path: Path, extra: str = "") -> str:
    return (f"listeners: [{{name: a, host: 127.0.0.1, port: {port}, mode: plain, "
            "allow_plaintext_login: true}]\n"
            f"state_dir: {tmp_path / 'state'}\n"
            "lockout: {enabled: false}\nscan: {enabled: false}\n"
            "limits: {shutdown_grace: 1}\n" + extra)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_auto_is_one_worker_per_usable_cpu() -> None:
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
    assert resolve_workers(3) == 3


def test_bound_sockets_queue_a_burst_of_clients_up_to_listen_backlog(tmp_path: Path) -> None:
    """Regression (issue 18 item 4): the supervisor's listen(100) dropped the SYNs of a
    1,000-client burst while the workers were busy; ``limits.listen_backlog`` sets the queue."""
    port = free_port()
    text = _policy_text(port, tmp_path)
    for limits, burst, queued in (("", 1000, {1000}), (", listen_backlog: 10", 50, {10, 11})):
        config = load_config(_write(tmp_path, text.replace("shutdown_grace: 1",
                                                           "shutdown_grace: 1" + limits)))
        group = bind_listeners(config)["a"]
        try:  # nothing accepts: only the kernel's queue holds them (Linux: backlog + 1)
            assert queued_connections(port, burst, within=1.5) in queued
        finally:
            for sock in group:
                sock.close()


def test_bind_listeners_names_the_listener_whose_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(_write(tmp_path, _policy_text(port, tmp_path)))
    with socket.create_server(("127.0.0.1", port)), pytest.raises(OSError) as failed:
        bind_listeners(config, 2)
    assert f"listeners a: 127.0.0.1:{port}: Address already in use" in str(failed.value)


def test_bind_listeners_gives_listening_sockets(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(_write(tmp_path, _policy_text(port, tmp_path)))
    sockets = bind_listeners(config)
    try:
        assert sockets["a"][0].getsockname() == ("127.0.0.1", port)
        assert sockets["a"][0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # backlog accepts
        with pytest.raises(OSError):  # the port is ours now: a second bind fails, cleanly
            bind_listeners(config)
        with pytest.raises(OSError):  # also for a second popproxy with workers
            bind_listeners(config, 2)
    finally:
        sockets["a"][0].close()


def _accept_all(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            sock.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def test_each_worker_gets_its_own_socket_on_one_port(tmp_path: Path) -> None:
    """The second socket joins the first one's port (SO_REUSEPORT), and the kernel hashes a
    burst of connections over them (40: each gets some; binomially, 4 or fewer on one socket
    happens about twice in 10^7 runs)."""
    port = free_port()
    config = load_config(_write(tmp_path, _policy_text(port, tmp_path)))
    group = bind_listeners(config, 2)["a"]
    try:
        assert [sock.getsockname() for sock in group] == [("127.0.0.1", port)] * 2
        clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(40)]
        counts = [_accept_all(sock) for sock in group]
        for client in clients:
            client.close()
        assert sum(counts) == 40 and min(counts) > 4, counts
        with pytest.raises(OSError):  # another process's group cannot take the port
            bind_listeners(config, 2)
    finally:
        for sock in group:
            sock.close()


def test_backoff_doubles_while_workers_die_young_and_resets_after_a_stable_run() -> None:
    slot = Slot(0, started_at=100.0)
    delays = [slot.next_delay(101.0) for _ in range(10)]
    assert delays[:3] == [BACKOFF_FIRST, BACKOFF_FIRST * 2, BACKOFF_FIRST * 4]
    assert delays[-1] == BACKOFF_MAX
    assert slot.next_delay(100.0 + STABLE_AFTER) == BACKOFF_FIRST


def test_validate_reload_refuses_what_a_worker_would_refuse(tmp_path: Path) -> None:
    port = free_port()
    path = _write(tmp_path, _policy_text(port, tmp_path))
    current = load_config(path)
    assert validate_reload(current, path) == current
    path.write_text(_policy_text(port + 1, tmp_path))
    with pytest.raises(ValueError, match="listener"):
        validate_reload(current, path)
    path.write_text("listeners: [oops\n")
    with pytest.raises(ValueError) as refused:
        validate_reload(current, path)
    # One line, "FILE:LINE: ...", as one process writes it to the audit log and the journal.
    assert str(refused.value).startswith(f"{path}:") and "\n" not in str(refused.value)
    path.write_text(_policy_text(port, tmp_path, "users: [{match: bob, mechanisms: [PLAIN]}]\n"))
    assert len(validate_reload(current, path).users) == 1
    moved = _policy_text(port, tmp_path).replace(str(tmp_path / "state"), str(tmp_path / "b"))
    path.write_text(moved)
    with pytest.raises(ValueError, match="state_dir"):
        validate_reload(current, path)


async def _restart_scenario(config: Policy, path: Path, tmp_path: Path
                            ) -> tuple[list[int], SupervisorMetrics, list[int]]:
    released: list[int] = []
    metrics = SupervisorMetrics()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    supervisor = Supervisor(config, path, 2, ["--event-loop", "asyncio"], metrics,
                            metrics_dir, Notifier(path=""), release_worker=released.append)
    await supervisor.start()
    try:
        first = supervisor.pids
        victim = supervisor.slots[1]
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGKILL)
        async with asyncio.timeout(60):
            while not (victim.ready.is_set() and supervisor.pids != first):
                await asyncio.sleep(0.05)
        assert await supervisor.reload()  # the new worker answers SIGHUP too
        return first, metrics, released
    finally:
        await supervisor.stop()


def test_a_dead_worker_is_released_and_replaced(tmp_path: Path) -> None:
    """The restart path calls ``release_worker`` with the dead worker's id (the hook for the
    host-shared session slots), counts the restart, and the new worker takes reloads."""
    path = _write(tmp_path, _policy_text(free_port(), tmp_path))
    config = load_config(path)
    first, metrics, released = asyncio.run(_restart_scenario(config, path, tmp_path))
    assert released[0] == 1  # the killed one first; at stop every worker is released too
    assert metrics.registry.get_sample_value("popproxy_worker_restarts_total",
                                             {"reason": "signal"}) == 1
    assert metrics.registry.get_sample_value("popproxy_supervisor_reloads_total",
                                             {"result": "ok"}) == 1
    assert len(first) == 2
    assert not any(os.path.exists(f"/proc/{pid}") and _is_running(pid) for pid in first)


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_release_hook_that_fails_does_not_stop_the_restart(tmp_path: Path) -> None:
    def broken(worker_id: int) -> None:
        raise RuntimeError(f"cannot release {worker_id}")

    path = _write(tmp_path, _policy_text(free_port(), tmp_path))
    supervisor = Supervisor(load_config(path), path, 1, [], SupervisorMetrics(), tmp_path,
                            Notifier(path=""), release_worker=broken)
    slot = supervisor.slots[0]
    slot.ready.set()
    supervisor._gone(slot, 999_999)  # logs the hook's error, does not raise
    assert not slot.ready.is_set()
    assert slot.replies.get_nowait() == "exited"  # a pending reload stops waiting for it
    sup.no_release(3)  # the default hook accepts any id and does nothing
    assert supervisor.metrics.registry.get_sample_value("popproxy_workers") == 0


async def _start_with_broken_file(config: Policy, path: Path, tmp_path: Path) -> str:
    supervisor = Supervisor(config, path, 2, [], SupervisorMetrics(), tmp_path,
                            Notifier(path=""))
    try:
        await supervisor.start()
    except RuntimeError as exc:
        return str(exc)
    finally:
        await supervisor.stop()
    return "started"


def test_a_worker_that_cannot_start_fails_the_start_at_once(tmp_path: Path) -> None:
    """The policy file broke between the supervisor's load and the workers' (exit 2): start()
    raises well before READY_TIMEOUT instead of retrying a worker that can never start."""
    path = _write(tmp_path, _policy_text(free_port(), tmp_path))
    config = load_config(path)
    path.write_text("listeners: [oops\n")
    message, seconds = asyncio.run(_timed(_start_with_broken_file(config, path, tmp_path)))
    assert "before it was ready" in message and "exit 2" in message
    assert seconds < sup.READY_TIMEOUT / 2


async def _timed(coro: Coroutine[Any, Any, str]) -> tuple[str, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await coro
    return result, loop.time() - started


# A stand-in worker speaking the status-pipe protocol: ready, then "reload <answer>" per SIGHUP
# (the answer per worker id), until SIGTERM.  Real workers refuse what the supervisor cannot
# foresee (a file edited again between its check and theirs); this one refuses on demand.
STAND_IN = """
import os, signal, sys, time
fd, answer = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGHUP, lambda *_: os.write(fd, f"reload {answer}\\n".encode()))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
os.write(fd, b"ready\\n")
while True:
    time.sleep(1)
"""


class StandInSupervisor(Supervisor):
    answers = ("ok", "refused")

    def _command(self, slot: Slot, status_fd: int) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(status_fd), self.answers[slot.worker_id]]


async def _reload_with_stand_ins(config: Policy, path: Path, tmp_path: Path,
                                 answers: tuple[str, str]
                                 ) -> tuple[bool, SupervisorMetrics, str]:
    metrics = SupervisorMetrics()
    supervisor = StandInSupervisor(config, path, 2, [], metrics, tmp_path, Notifier(path=""))
    supervisor.answers = answers
    await supervisor.start()
    try:
        return await supervisor.reload(), metrics, supervisor.refusal
    finally:
        await supervisor.stop()


@pytest.mark.parametrize(("answers", "result", "refusal"), [
    (("ok", "ok"), "ok", ""),
    (("ok", "refused"), "worker_refused", "workers [1] refused the new policy (see the log)"),
    # Regression (admin review): a worker that runs the new policy but refused its
    # certificates was reported as keeping the old policy, and the supervisor kept it.
    (("ok", "ok, certificates refused"), "worker_refused",
     "workers [1] refused the new certificates (see the log)")])
def test_one_refusing_worker_fails_the_reload(tmp_path: Path, answers: tuple[str, str],
                                              result: str, refusal: str) -> None:
    path = _write(tmp_path, _policy_text(free_port(), tmp_path))
    ok, metrics, said = asyncio.run(_reload_with_stand_ins(load_config(path), path,
                                                           tmp_path, answers))
    assert ok is (result == "ok")
    assert said == refusal  # what systemd's STATUS= line says (with ERRNO=22) after a refusal
    assert metrics.registry.get_sample_value("popproxy_supervisor_reloads_total",
                                             {"result": result}) == 1


def test_validate_reload_refuses_an_unreadable_lockout_key(tmp_path: Path) -> None:
    port = free_port()
    path = _write(tmp_path, _policy_text(port, tmp_path))
    current = load_config(path)
    path.write_text(_policy_text(port, tmp_path).replace(
        "lockout: {enabled: false}",
        f"lockout: {{enabled: true, secret_file: {tmp_path / 'missing' / 'lockout.key'}}}"))
    with pytest.raises(ValueError, match=r"lockout\.secret_file"):
        validate_reload(current, path)


def _audited_supervisor(config: Policy, path: Path, tmp_path: Path
                        ) -> tuple[Supervisor, Callable[..., float | None], io.StringIO]:
    """A supervisor with no workers started (a refused reload reaches none), its merged
    metrics' sample getter and its audit log."""
    sink = io.StringIO()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    registry, metrics = metrics_registry(metrics_dir)
    supervisor = Supervisor(config, path, 2, [], metrics, metrics_dir, Notifier(path=""),
                            audit=AuditLog(sink))
    return supervisor, registry.get_sample_value, sink


def test_a_refused_reload_is_counted_and_audited_as_with_one_process(tmp_path: Path) -> None:
    """An invalid policy reaches no worker, so the supervisor counts it in
    popproxy_config_reloads_total (once, summed with the workers' family on /metrics) and
    writes the ``config_reload`` event a worker would."""
    path = _write(tmp_path, _policy_text(free_port(), tmp_path))
    config = load_config(path)
    path.write_text("listeners: [oops\n")
    supervisor, value, sink = _audited_supervisor(config, path, tmp_path)
    assert asyncio.run(supervisor.reload()) is False
    assert value("popproxy_supervisor_reloads_total", {"result": "refused"}) == 1
    assert value("popproxy_config_reloads_total", {"kind": "policy", "result": "refused"}) == 1
    assert value("popproxy_config_reloads_total", {"kind": "policy", "result": "ok"}) is None
    (event,) = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert event["event"] == "config_reload" and event["result"] == "refused"
    assert event["session"] is None and "invalid YAML" in event["error"]


def test_a_refused_certificate_is_counted_as_certificates_as_with_one_process(
        tmp_path: Path) -> None:
    """Regression (admin review): garbage in the certificate file, SIGHUP: the supervisor
    refuses it (no worker re-reads anything) and counted only ``kind="policy"``; one process
    counts the refused policy and the refused certificate re-read, and audits both."""
    import trustme

    pem = tmp_path / "mail.pem"
    trustme.CA().issue_cert("mail.example").private_key_and_cert_chain_pem.write_to_path(
        str(pem))
    text = _policy_text(free_port(), tmp_path).replace("mode: plain", "mode: tls")
    path = _write(tmp_path, text + f"tls: {{certificates: [{{cert: {pem}, key: {pem}}}]}}\n")
    config = load_config(path)
    pem.write_text("not a certificate\n")
    supervisor, value, sink = _audited_supervisor(config, path, tmp_path)
    assert asyncio.run(supervisor.reload()) is False
    kinds = {kind: value("popproxy_config_reloads_total", {"kind": kind, "result": "refused"})
             for kind in ("policy", "certificates")}
    assert kinds == {"policy": 1, "certificates": 1}
    events = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [(e["event"], e["result"]) for e in events] == [("config_reload", "refused"),
                                                           ("tls_reload", "refused")]
    assert events[1]["error"].startswith("certificates: tls.certificates.0.cert: ")
    # A refusal for another reason is no certificate refusal.
    path.write_text("listeners: [oops\n")
    assert asyncio.run(supervisor.reload()) is False
    assert value("popproxy_config_reloads_total",
                 {"kind": "certificates", "result": "refused"}) == 1
