"""``popproxy run --event-loop uvloop``: the same proxy on libuv's loop (bench/README.md).

The in-process tests run on the standard loop; this runs the real CLI on uvloop with both TLS
styles (implicit TLS and STLS, RFC 2595) and a full download: the client and upstream
``SocketChannel`` (the upstream connected by ``upstream_socket``) and the server's ``Acceptor``
rely on ``add_reader``/``add_writer``, which uvloop implements separately.
"""

from __future__ import annotations

import poplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.procs import stop_process
from tests.support.ports import free_port

pytest.importorskip("uvloop")  # in the [test] extra; only missing in a hand-made environment


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"popproxy did not listen on {port}: {log.read_text()}")


def test_uvloop_serves_implicit_tls_and_stls(tmp_path: Path) -> None:
    tls_port, stls_port, demo_port = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "listeners:\n"
        f"  - {{name: pop3s, host: 127.0.0.1, port: {tls_port}, mode: tls}}\n"
        f"  - {{name: pop3, host: 127.0.0.1, port: {stls_port}, mode: starttls}}\n"
        f"upstream: {{host: 127.0.0.1, port: {demo_port}}}\n"
        f"state_dir: {state}\n"
        "lockout: {enabled: false}\n"
        "demo_upstream: {enabled: true}\n"
    )
    log = tmp_path / "popproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popproxy", "run", "--config", str(policy),
             "--event-loop", "uvloop"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(tls_port, proc, log)
        _wait_listening(stls_port, proc, log)
        ctx = ssl.create_default_context(cafile=str(state / "selfsigned.crt"))
        implicit = poplib.POP3_SSL("127.0.0.1", tls_port, context=ctx, timeout=10)
        stls = poplib.POP3("127.0.0.1", stls_port, timeout=10)
        stls.stls(context=ctx)
        for client in (implicit, stls):
            client.user("demo")
            client.pass_("demo")
            count, _ = client.stat()
            assert count >= 1
            _, lines, octets = client.retr(1)
            assert lines and octets > 0
            assert client.quit().startswith(b"+OK")
    finally:
        stop_process(proc)
    assert "Traceback" not in log.read_text()


def test_uvloop_missing_is_a_clear_error(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("listeners: [{name: p, host: 127.0.0.1, port: 1, mode: starttls}]\n")
    # A module that fails to import stands in for an environment without uvloop.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    result = subprocess.run(
        [sys.executable, "-m", "popproxy", "run", "--config", str(policy), "--event-loop",
         "uvloop"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "uvloop is not installed" in result.stderr
