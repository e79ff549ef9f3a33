"""SIGHUP reloads the policy of a running ``popproxy run --config DIR`` process.

A valid new policy applies to new connections only (a session opened before keeps its policy);
an invalid one, or one that would move a listener, is refused with a log line saying why, and
the old policy stays in force.
"""

from __future__ import annotations

import os
import poplib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port

ALLOWED, OTHER = "127.0.0.2", "127.0.0.3"
START_TIMEOUT = 15.0
LOG_TIMEOUT = 10.0
RELOADED = "policy reloaded"
REFUSED = "policy reload refused"


@dataclass
class Popproxy:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = LOG_TIMEOUT) -> str:
        """Wait until ``text`` occurs ``count`` times in the process output; return the output."""
        deadline = time.monotonic() + timeout
        while True:
            output = self.log()
            if output.count(text) >= count:
                return output
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no {count}x {text!r} in popproxy's output "
                            f"(exit {self.proc.poll()}):\n{output[-3000:]}")
            time.sleep(0.02)

    def sighup(self, expect: str) -> str:
        """SIGHUP, then wait for one more ``expect`` line (the reload's outcome)."""
        seen = self.log().count(expect)
        os.kill(self.proc.pid, signal.SIGHUP)
        return self.wait_for(expect, seen + 1)


@contextmanager
def _popproxy(config: Path, cwd: Path) -> Iterator[Popproxy]:
    log_path = cwd / "popproxy.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popproxy", "run", "--config", str(config)],
            cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    popproxy = Popproxy(proc, log_path)
    try:
        popproxy.wait_for("popproxy ready", timeout=START_TIMEOUT)
        yield popproxy
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _listeners(port: int, deny: str = "[]") -> str:
    return (
        "# the client-facing side\n"
        "listeners:\n"
        "  - name: pop3\n"
        "    host: 127.0.0.1\n"
        f"    port: {port}\n"
        "    mode: plain\n"
        "    allow_plaintext_login: true\n"
        "    allow: [127.0.0.0/8]\n"
        f"    deny: {deny}\n"
    )


def _greeting(port: int, source: str) -> bytes:
    """The first line popproxy sends to a new connection from ``source``; b"" if it closes."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        data = b""
        try:
            while b"\r\n" not in data and (chunk := sock.recv(1024)):
                data += chunk
        except ConnectionResetError:
            pass
    return data


class Pop3From(poplib.POP3):
    """``poplib.POP3`` connecting from a chosen loopback source address."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__("127.0.0.1", port, timeout=5)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))


def _allowed(port: int, source: str) -> bool:
    return _greeting(port, source).startswith(b"+OK")


@dataclass
class Running:
    popproxy: Popproxy
    port: int
    listeners: Path  # the policy file the tests rewrite


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """``popproxy run --config DIR`` on a two-file policy directory (listeners + service) with
    the demo upstream; the listener admits all of 127.0.0.0/8."""
    policy = tmp_path / "policy"
    policy.mkdir()
    port = free_port()
    listeners = policy / "10-listeners.yaml"
    listeners.write_text(_listeners(port))
    (policy / "20-service.yaml").write_text(
        f"upstream: {{host: 127.0.0.1, port: {free_port(port)}}}\n"
        "limits: {auth_failure_delay: 0, shutdown_grace: 1}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "demo_upstream: {enabled: true}\n"
    )
    with _popproxy(policy, tmp_path) as popproxy:
        assert _allowed(port, ALLOWED) and _allowed(port, OTHER)
        yield Running(popproxy, port, listeners)


def test_sighup_applies_a_valid_policy_and_keeps_it_over_an_invalid_one(
    running: Running,
) -> None:
    popproxy, port, listeners = running.popproxy, running.port, running.listeners
    # A session opened under the first policy, still open across both reloads.
    early = Pop3From(port, ALLOWED)
    early.user("demo")
    early.pass_("demo")

    # A valid new policy: 127.0.0.2 denied for new connections, at once ...
    listeners.write_text(_listeners(port, deny=f"[{ALLOWED}/32]"))
    popproxy.sighup(RELOADED)
    assert _greeting(port, ALLOWED) == b""
    assert _allowed(port, OTHER)
    # ... while the session that was already open keeps working.
    assert early.retr(1)[1][-1] == b"This message came through the proxy."

    # An invalid file (bad CIDR): refused with file:line, the last good policy stays.  Had any
    # of it been applied, 127.0.0.2 would be back in and 127.0.0.3 denied.
    bad_line = f"    deny: [{OTHER}/32, 10.0.0.0/33]"
    listeners.write_text(_listeners(port, deny=f"[{OTHER}/32, 10.0.0.0/33]"))
    line = 1 + listeners.read_text().splitlines().index(bad_line)
    output = popproxy.sighup(REFUSED)
    assert (f"{listeners}:{line}: listeners.0.deny.1: 10.0.0.0/33: not an IP network"
            in output)
    assert output.count(RELOADED) == 1
    assert _greeting(port, ALLOWED) == b""
    assert _allowed(port, OTHER)

    assert early.retr(2)[1][4] == b".a line starting with a dot"
    early.quit()
    assert popproxy.proc.poll() is None


def test_sighup_refuses_a_policy_that_moves_a_listener(running: Running) -> None:
    popproxy, port, listeners = running.popproxy, running.port, running.listeners
    # Valid on its own, but moves the listener (and would deny 127.0.0.2).
    new_port = free_port(port)
    listeners.write_text(_listeners(new_port, deny=f"[{ALLOWED}/32]"))
    output = popproxy.sighup(REFUSED)
    assert any("policy reload refused: listener names, addresses or modes" in line
               and "restart popproxy" in line for line in output.splitlines()), output[-2000:]
    assert RELOADED not in output
    # Nothing of it applies: same socket, same allow/deny.
    assert _allowed(port, ALLOWED) and _allowed(port, OTHER)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
    assert popproxy.proc.poll() is None
