"""systemd readiness (sd_notify) of ``popproxy run``: READY=1 once it serves, RELOADING=1 ...
READY=1 around SIGHUP, STOPPING=1 on SIGTERM, STATUS= for ``systemctl status``.

The receiving end is a real AF_UNIX datagram socket, as systemd binds it; ``popproxy run`` finds
it through ``$NOTIFY_SOCKET`` like under ``Type=notify``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from popproxy.proxy.sdnotify import Notifier, report_status
from tests.support.ports import accepts, free_port

TIMEOUT = 15.0


class Receiver:
    """systemd's side: a bound datagram socket; ``name`` is what goes in $NOTIFY_SOCKET."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def next(self, timeout: float = TIMEOUT, skip_status: bool = False) -> dict[str, str]:
        """The next message as {VAR: value}; ``skip_status``: ignore STATUS=-only updates
        (the periodic session count, every STATUS_INTERVAL seconds)."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                pytest.fail(f"no notification within {timeout}s")
            message = dict(line.split("=", 1) for line in data.decode().split("\n"))
            if not (skip_status and list(message) == ["STATUS"]):
                return message

    def pending(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn") as directory:
        path = os.path.join(directory, "notify")
        receiver = Receiver(path, path)
        yield receiver
        receiver.close()


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"popproxy-test-{secrets.token_hex(6)}"
    receiver = Receiver(f"@{name}", f"\0{name}")
    yield receiver
    receiver.close()


# --------------------------------------------------------------------------- Notifier
def test_notifier_sends_to_a_path_socket(path_receiver: Receiver) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": path_receiver.name})
    assert notifier.enabled
    assert notifier.ready("serving: 1 listeners, 0 sessions")
    assert path_receiver.next() == {"READY": "1", "STATUS": "serving: 1 listeners, 0 sessions"}


def test_notifier_reload_and_stop_sequence_on_an_abstract_socket(
    abstract_receiver: Receiver,
) -> None:
    notifier = Notifier(abstract_receiver.name)
    # Before READY=1 (listeners still binding) a SIGHUP must not announce readiness.
    assert not notifier.reloading() and not notifier.reloaded("x")
    assert not notifier.status("x")
    notifier.ready("serving")
    assert abstract_receiver.next()["READY"] == "1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = abstract_receiver.next()
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after
    assert not notifier.status("during the reload")  # no STATUS= update mid-reload
    assert notifier.reloaded("serving again")
    assert abstract_receiver.next() == {"READY": "1", "STATUS": "serving again"}
    assert notifier.status("serving, 3 sessions")
    assert not notifier.status("serving, 3 sessions")  # unchanged: not sent again
    assert abstract_receiver.next() == {"STATUS": "serving, 3 sessions"}
    assert notifier.stopping("stopping: draining 3 sessions")
    assert abstract_receiver.next() == {"STOPPING": "1",
                                        "STATUS": "stopping: draining 3 sessions"}
    assert not notifier.status("after stop")
    assert not abstract_receiver.pending()


def test_a_refused_reload_is_ready_again_with_the_reason_and_an_errno(
    abstract_receiver: Receiver,
) -> None:
    """systemctl status shows why (STATUS=), systemd records ERRNO=22 until a good reload."""
    notifier = Notifier(abstract_receiver.name)
    notifier.ready("serving")
    abstract_receiver.next()
    notifier.reloading()
    abstract_receiver.next()
    assert notifier.reloaded("serving", "tls.certificates.0.key: /k: no such file")
    assert abstract_receiver.next() == {
        "READY": "1", "STATUS": "reload refused: tls.certificates.0.key: /k: no such file",
        "ERRNO": "22"}
    assert notifier.state == "ready"
    notifier.reloading()
    abstract_receiver.next()
    assert notifier.reloaded("serving again")  # fixed: the error is cleared
    assert abstract_receiver.next() == {"READY": "1", "STATUS": "serving again", "ERRNO": "0"}
    notifier.reloading()
    abstract_receiver.next()
    assert notifier.reloaded("serving")
    assert abstract_receiver.next() == {"READY": "1", "STATUS": "serving"}


def test_notifier_without_socket_or_with_a_dead_one_does_nothing(tmp_path: Path) -> None:
    assert not Notifier(environ={}).enabled
    assert not Notifier(environ={}).ready("x")
    assert not Notifier("vsock:2:1234").enabled  # not a UNIX socket: ignored
    dead = Notifier(str(tmp_path / "nobody-listens"))
    assert dead.enabled
    assert dead.ready("x") is False  # logged, never raised


def test_report_status_sends_the_session_count_when_it_changes(
    abstract_receiver: Receiver,
) -> None:
    notifier = Notifier(abstract_receiver.name)
    notifier.ready("serving: 1 listeners, 0 sessions")
    counts = iter([0, 0, 2, 2, 1])

    async def run() -> None:
        def status() -> str:
            return f"serving: 1 listeners, {next(counts, 1)} sessions"

        task = asyncio.create_task(report_status(notifier, status, interval=0.01))
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(run())
    assert abstract_receiver.next()["READY"] == "1"
    assert abstract_receiver.next() == {"STATUS": "serving: 1 listeners, 2 sessions"}
    assert abstract_receiver.next() == {"STATUS": "serving: 1 listeners, 1 sessions"}
    assert not abstract_receiver.pending()


# --------------------------------------------------------------------------- popproxy run


@pytest.mark.parametrize("workers", [1, 2])
def test_popproxy_run_notifies_systemd(tmp_path: Path, abstract_receiver: Receiver,
                                       workers: int) -> None:
    """The same with a supervisor and two workers: READY=1 once both accept, the reload
    bracketed until both answered; the workers themselves never notify."""
    tls_port, stls_port, metrics_port = free_port(), free_port(), free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "listeners:\n"
        f"  - {{name: pop3s, host: 127.0.0.1, port: {tls_port}, mode: tls}}\n"
        f"  - {{name: pop3, host: 127.0.0.1, port: {stls_port}, mode: starttls}}\n"
        f"upstream: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"observability: {{metrics_host: 127.0.0.1, metrics_port: {metrics_port}}}\n"
        "limits: {shutdown_grace: 2}\n"
        "demo_upstream: {enabled: true}\n"
    )
    log = tmp_path / "popproxy.log"
    env = {**os.environ, "NOTIFY_SOCKET": abstract_receiver.name}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "popproxy", "run", "--config", str(policy),
                                 "--workers", str(workers)],
                                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    serving = ("serving: 2 listeners, 0 sessions" if workers == 1
               else "serving: 2 listeners, 2 workers")
    try:
        ready = abstract_receiver.next(skip_status=True)
        # READY=1 only once every listener accepts connections and the metrics server answers.
        assert accepts(tls_port) and accepts(stls_port), log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert ready == {"READY": "1", "STATUS": serving}
        assert "popproxy ready" in log.read_text()

        sent = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        os.kill(proc.pid, signal.SIGHUP)
        reloading = abstract_receiver.next(skip_status=True)
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) >= sent
        again = abstract_receiver.next(skip_status=True)  # READY=1 again once the reload is over
        assert again["READY"] == "1" and again["STATUS"].startswith("serving: 2 listeners")
        assert log.read_text().count("TLS certificates reloaded") == workers

        os.kill(proc.pid, signal.SIGTERM)
        stopping = abstract_receiver.next(skip_status=True)
        assert stopping["STOPPING"] == "1"
        assert stopping["STATUS"].startswith("stopping: draining ")
        assert proc.wait(30) == 0, log.read_text()
        assert not abstract_receiver.pending()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
