"""A worker process (proxy/worker.py): its command line, its reload, its report pipe, and one
real worker run in this process on a socket bound the way the supervisor binds it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from popproxy.policy import load_config
from popproxy.proxy import worker as worker_mod
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.tasks import spawn
from popproxy.proxy.worker import (
    PR_SET_PDEATHSIG,
    STATUS_READY,
    STATUS_RELOAD_CERTIFICATES_REFUSED,
    STATUS_RELOAD_OK,
    STATUS_RELOAD_REFUSED,
    StatusPipe,
    WorkerArgs,
    main_worker,
    parse_args,
    reload_worker,
    run_worker,
)
from tests.support.ports import free_port


def _policy(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"listeners: [{{name: a, host: 127.0.0.1, port: {port}, mode: plain, "
                    "allow_plaintext_login: true}]\n"
                    f"state_dir: {tmp_path / 'state'}\n"
                    "lockout: {enabled: false}\nscan: {enabled: false}\n"
                    "limits: {shutdown_grace: 1}\n" + extra)
    return path


def test_parse_args_reads_what_the_supervisor_writes(tmp_path: Path) -> None:
    args, level = parse_args(["--config", "p.yaml", "--worker-id", "3", "--workers-total", "4",
                              "--listen=a=7",
                              "--listen=b=8", "--status-fd", "9", "--event-loop", "uvloop",
                              "--log-level", "DEBUG", "--capture", str(tmp_path),
                              "--capture-bodies", "--parent-pid", "42"])
    assert (args.config_path, args.worker_id, args.listen, args.status_fd) == (
        Path("p.yaml"), 3, {"a": 7, "b": 8}, 9)
    assert (args.event_loop, level, args.parent_pid) == ("uvloop", "DEBUG", 42)
    assert args.capture is not None and args.capture.keep_bodies
    assert args.workers == 4  # the scan pools size themselves on the CPUs' share


def test_reload_applies_a_new_policy_and_refuses_a_broken_one(tmp_path: Path) -> None:
    path = _policy(tmp_path, free_port())
    server = ProxyServer(load_config(path), Observer())
    # Unchanged: nothing to swap, still a success.
    assert reload_worker(server, path) == STATUS_RELOAD_OK
    assert server.observer.metrics.registry.get_sample_value(
        "popproxy_config_reloads_total", {"kind": "policy", "result": "unchanged"}) == 1
    path.write_text(path.read_text() + "users: [{match: bob, mechanisms: [PLAIN]}]\n")
    assert reload_worker(server, path) == STATUS_RELOAD_OK
    assert len(server.config.users) == 1
    path.write_text("listeners: [oops\n")
    assert reload_worker(server, path) == STATUS_RELOAD_REFUSED
    assert len(server.config.users) == 1  # the old policy stays
    refused = server.observer.metrics.registry.get_sample_value(
        "popproxy_config_reloads_total", {"kind": "policy", "result": "refused"})
    assert refused == 1


def test_a_refused_policy_does_not_log_the_certificates_as_reloaded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (admin review): a worker refusing the new policy still re-reads the old
    policy's certificates, and said "TLS certificates reloaded" after the refusal."""
    port = free_port()
    path = _policy(tmp_path, port)
    path.write_text(path.read_text().replace("mode: plain", "mode: tls"))  # self-signed
    server = ProxyServer(load_config(path), Observer())
    original = path.read_text()
    path.write_text(original.replace(f"port: {port}", f"port: {free_port(port)}"))
    with caplog.at_level(logging.INFO, logger="popproxy"):
        # A listener cannot move live.
        assert reload_worker(server, path) == STATUS_RELOAD_REFUSED
    said = [r.getMessage() for r in caplog.records]
    assert "TLS certificates reloaded" not in said
    assert said[-1] == ("TLS certificates re-read from the old policy's files (the new policy "
                        "was refused)")
    caplog.clear()
    path.write_text(original)
    with caplog.at_level(logging.INFO, logger="popproxy"):
        # The files of the policy in force: unchanged.
        assert reload_worker(server, path) == STATUS_RELOAD_OK
    assert [r.getMessage() for r in caplog.records][-1] == "TLS certificates reloaded"


def test_a_policy_applied_with_its_certificates_refused_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (admin review): the worker said "reload refused", so the supervisor logged
    that it kept the old policy, which it was no longer running."""
    path = _policy(tmp_path, free_port())
    server = ProxyServer(load_config(path), Observer())
    monkeypatch.setattr(server, "reload_tls", lambda policy_refused: False)
    path.write_text(path.read_text() + "users: [{match: bob, mechanisms: [PLAIN]}]\n")
    assert reload_worker(server, path) == STATUS_RELOAD_CERTIFICATES_REFUSED
    assert len(server.config.users) == 1  # the new policy runs


def test_status_pipe_sends_lines_and_survives_a_gone_reader() -> None:
    read_fd, write_fd = os.pipe()
    pipe = StatusPipe(write_fd)
    pipe.send(STATUS_READY)
    assert os.read(read_fd, 100) == b"ready\n"
    os.close(read_fd)
    pipe.send(STATUS_RELOAD_OK)  # EPIPE: logged, not raised (SIGPIPE is ignored by Python)
    os.close(write_fd)


def test_the_worker_asks_to_die_with_its_supervisor() -> None:
    calls: list[tuple[int, ...]] = []

    def prctl(*args: int) -> int:
        calls.append(args)
        return 0

    worker_mod._die_with_supervisor(prctl)
    assert calls == [(PR_SET_PDEATHSIG, signal.SIGTERM)]


@pytest.fixture
def quiet_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """main_worker without its process-wide effects on pytest (log handlers, PDEATHSIG)."""
    monkeypatch.setattr(worker_mod, "_die_with_supervisor", lambda: None)
    monkeypatch.setattr(worker_mod, "configure_logging", lambda level: None)


@pytest.mark.usefixtures("quiet_main")
def test_a_worker_whose_supervisor_is_gone_does_not_start(tmp_path: Path) -> None:
    path = _policy(tmp_path, free_port())
    assert main_worker(["--config", str(path), "--worker-id", "0", "--status-fd", "1",
                        "--parent-pid", "1" if os.getppid() != 1 else "2"]) == 1


@pytest.mark.usefixtures("quiet_main")
def test_a_worker_with_a_broken_policy_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listeners: [oops\n")
    assert main_worker(["--config", str(path), "--worker-id", "0", "--status-fd", "1",
                        "--parent-pid", str(os.getppid())]) == 2


async def _serve_one(args: WorkerArgs, read_fd: int, port: int) -> list[str]:
    config = load_config(args.config_path)
    task = spawn(run_worker(config, args, StatusPipe(args.status_fd)), "worker")
    loop = asyncio.get_running_loop()
    lines: list[str] = []

    async def next_line() -> str:
        data = await loop.run_in_executor(None, os.read, read_fd, 100)
        lines.append(data.decode().strip())
        return lines[-1]

    assert await next_line() == STATUS_READY
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"+OK")  # the proxy's own greeting
    writer.close()
    os.kill(os.getpid(), signal.SIGHUP)
    assert await next_line() == STATUS_RELOAD_OK
    os.kill(os.getpid(), signal.SIGTERM)  # drain: run_worker returns
    await asyncio.wait_for(task, 30)
    return lines


def test_a_worker_serves_on_an_inherited_socket_and_obeys_signals(tmp_path: Path) -> None:
    port = free_port()
    path = _policy(tmp_path, port)
    listening = socket.create_server(("127.0.0.1", port))
    read_fd, write_fd = os.pipe()
    args = WorkerArgs(path, 0, 1, {"a": listening.fileno()}, write_fd, "asyncio", None,
                      os.getppid())
    try:
        lines = asyncio.run(_serve_one(args, read_fd, port))
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert lines == [STATUS_READY, STATUS_RELOAD_OK]
    with pytest.raises(OSError):  # the worker's server closed the inherited socket
        socket.create_connection(("127.0.0.1", port), timeout=1)
