"""The JSON audit log file is reopened on SIGUSR1 (and on SIGHUP, which also reloads), so
logrotate can rename it and signal (packaging/popproxy.logrotate: ``postrotate systemctl kill
-s USR1``) instead of copytruncate, which loses the lines written between its copy and its
truncate.  SIGUSR1 reloads nothing (issue 19 item 6), also with workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popproxy.auditlog import AuditLog, open_audit_log
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
LOGROTATE = ROOT / "packaging" / "popproxy.logrotate"
TIMEOUT = 15.0


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- AuditLog
def test_reopen_after_rename_writes_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = open_audit_log(str(path))
    assert audit.path == str(path)
    audit.event("connect", "s1")
    path.rename(tmp_path / "audit.log.1")
    audit.event("connect", "s2")  # before the signal: still the renamed file
    assert audit.reopen()
    audit.event("connect", "s3")
    assert [e["session"] for e in _events(tmp_path / "audit.log.1")] == ["s1", "s2"]
    assert [e["session"] for e in _events(path)] == ["s3"]


def test_reopen_failure_keeps_the_old_file(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    audit = AuditLog(path=str(directory / "audit.log"))
    audit.event("connect", "s1")
    directory.rename(tmp_path / "moved")  # the configured directory is gone
    assert not audit.reopen()
    assert "cannot be reopened" in caplog.text
    audit.event("connect", "s2")
    assert [e["session"] for e in _events(tmp_path / "moved" / "audit.log")] == ["s1", "s2"]


def test_reopen_of_a_stream_or_nothing_is_a_no_op() -> None:
    assert open_audit_log(None).reopen()
    assert open_audit_log("-").reopen()


# --------------------------------------------------------------------------- popproxy run


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    output: Path
    port: int

    def wait(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not check():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} (exit {self.proc.poll()}):\n"
                            f"{self.output.read_text()[-3000:]}")
            time.sleep(0.02)

    def connect(self) -> None:
        """One connection: an audit ``connect`` event."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            assert sock.recv(100).startswith(b"+OK")


@contextmanager
def _popproxy(tmp_path: Path, audit: Path, workers: int = 1) -> Iterator[Running]:
    """``popproxy run`` (STLS listener, demo upstream) writing its audit log to ``audit``."""
    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"listeners: [{{name: pop3, host: 127.0.0.1, port: {port}, mode: starttls}}]\n"
        f"upstream: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"observability: {{audit_log: {audit}}}\n"
        "limits: {shutdown_grace: 1}\n"
        "demo_upstream: {enabled: true}\n"
    )
    output = tmp_path / "popproxy.log"
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "popproxy", "run", "--config", str(policy),
                                 "--workers", str(workers)], cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    running = Running(proc, output, port)
    try:
        running.wait(lambda: "popproxy ready" in output.read_text(), "not ready")
        running.connect()
        running.wait(lambda: audit.exists() and '"connect"' in audit.read_text(),
                     "no connect event")
        yield running
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _new_events_go_to_the_new_file(running: Running, audit: Path, rotated: Path,
                                   old_lines: str, reloaded: bool = True,
                                   connections: int = 1) -> None:
    """After the signal, new events go to a new file at the configured path; ``reloaded``:
    the signal was SIGHUP (a reload: its tls_reload event comes first)."""
    if reloaded:
        running.wait(lambda: audit.exists() and "tls_reload" in audit.read_text(),
                     "no new audit file after SIGHUP")
    else:  # SIGUSR1: the file appears at once (opened empty), nothing is reloaded
        running.wait(audit.exists, "no new audit file after SIGUSR1")
    for _ in range(connections):
        running.connect()
    running.wait(lambda: audit.read_text().count('"connect"') >= connections,
                 "no connect event in the new file")
    events = [e["event"] for e in _events(audit)]
    assert events == (["tls_reload"] if reloaded else []) + ["connect"] * connections
    assert rotated.read_text() == old_lines  # nothing more went to the rotated file
    assert [e["event"] for e in _events(rotated)] == ["connect"]


def test_sighup_reopens_the_audit_log_of_popproxy_run(tmp_path: Path) -> None:
    audit, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    with _popproxy(tmp_path, audit) as running:
        audit.rename(rotated)  # what logrotate does, then its postrotate sends SIGHUP
        old_lines = rotated.read_text()
        os.kill(running.proc.pid, signal.SIGHUP)
        _new_events_go_to_the_new_file(running, audit, rotated, old_lines)


def test_sigusr1_reopens_the_audit_log_without_a_reload(tmp_path: Path) -> None:
    audit, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    with _popproxy(tmp_path, audit) as running:
        audit.rename(rotated)
        old_lines = rotated.read_text()
        os.kill(running.proc.pid, signal.SIGUSR1)
        _new_events_go_to_the_new_file(running, audit, rotated, old_lines, reloaded=False)
        assert "policy reloaded" not in running.output.read_text()


def test_sigusr1_reaches_every_worker(tmp_path: Path) -> None:
    """Two workers append to one audit file; after SIGUSR1 to the supervisor both write to
    the new one (8 connections: the kernel spreads them, and no line goes to the old file)."""
    audit, rotated = tmp_path / "audit.log", tmp_path / "audit.log.1"
    with _popproxy(tmp_path, audit, workers=2) as running:
        audit.rename(rotated)
        old_lines = rotated.read_text()
        os.kill(running.proc.pid, signal.SIGUSR1)
        # Both workers reopen; the first one to do so creates the file.
        time.sleep(0.5)
        _new_events_go_to_the_new_file(running, audit, rotated, old_lines, reloaded=False,
                                       connections=8)


# --------------------------------------------------------------------------- logrotate
def _logrotate() -> str:
    binary = shutil.which("logrotate") or (
        "/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None)
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("logrotate not found (Debian package logrotate)")
        pytest.skip("logrotate not found (Debian package logrotate)")
    return binary


def test_logrotate_config_signals_instead_of_copytruncate(tmp_path: Path) -> None:
    text = LOGROTATE.read_text()
    directives = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "copytruncate" not in directives
    assert "sharedscripts" in directives
    kills = [d for d in directives if d.startswith("systemctl kill")]
    assert kills and all("--signal=USR1" in d and "popproxy" in d for d in kills)
    binary = _logrotate()
    # --debug parses the file and reports what it would do, without rotating or running.
    result = subprocess.run([binary, "--debug", "--state", str(tmp_path / "state"),
                             str(LOGROTATE)], capture_output=True, text=True, timeout=60,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output


def test_logrotate_rotates_and_popproxy_reopens(tmp_path: Path) -> None:
    """The packaged file run by the real logrotate, its paths moved to tmp_path and its
    ``systemctl kill`` lines replaced by a plain kill of the test's popproxy."""
    binary = _logrotate()
    logs = tmp_path / "log"
    logs.mkdir(mode=0o750)
    audit, rotated = logs / "audit.log", logs / "audit.log.1"
    with _popproxy(tmp_path, audit) as running:
        lines = LOGROTATE.read_text().replace("/var/log/popproxy", str(logs)).splitlines()
        postrotate = [i for i, line in enumerate(lines) if "systemctl kill" in line]
        assert len(postrotate) == 2
        lines[postrotate[0]] = f"        kill -USR1 {running.proc.pid}"
        del lines[postrotate[1]]
        config = tmp_path / "logrotate.conf"
        config.write_text("\n".join(lines) + "\n")
        old_lines = audit.read_text()
        result = subprocess.run([binary, "--force", "--state", str(tmp_path / "state.lr"),
                                 str(config)], capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert rotated.exists()  # delaycompress: the first rotation stays uncompressed
        _new_events_go_to_the_new_file(running, audit, rotated, old_lines, reloaded=False)
        assert "policy reloaded" not in running.output.read_text()
