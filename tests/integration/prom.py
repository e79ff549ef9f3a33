"""A throw-away Prometheus server for a test, and its HTTP API.

The server gets its own config (scrape targets, optional rule files), its own TSDB directory
and a free loopback port; the system's Prometheus service and /etc/prometheus are never used.
Needs the Debian package ``prometheus`` (``prometheus`` and ``promtool``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.integration.procs import die_with_parent as _die_with_parent
from tests.support.ports import free_port

START_TIMEOUT = 20.0


def unavailable(reason: str) -> NoReturn:
    """A missing tool: an error in CI (CI=true), a skip on a developer machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Prometheus tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"Prometheus tests skipped: {reason}")


def require(tool: str) -> str:
    """The path of ``prometheus`` or ``promtool`` (apt-get install prometheus)."""
    path = shutil.which(tool)
    if path is None:
        unavailable(f"{tool} not found (apt-get install prometheus)")
    return path


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body of a GET (error statuses are returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/<path>; the decoded JSON answer (also for 4xx error answers)."""
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError:
            answer = {"status": "error", "error": f"HTTP {status}: {body[:300]!r}"}
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query at the current time (``data.result`` is a list for vectors)."""
        return self.api("query", query=expr)

    def scalar(self, expr: str) -> float | None:
        """The single value of an expression that yields one sample, else None."""
        answer = self.query(expr)
        result = answer.get("data", {}).get("result", [])
        if answer.get("status") != "success" or len(result) != 1:
            return None
        return float(result[0]["value"][1])

    def wait_until(self, expr: str, expected: float, timeout: float = 15.0) -> None:
        """Poll until ``expr`` evaluates to ``expected`` (i.e. a scrape has seen it)."""
        deadline = time.monotonic() + timeout
        while (got := self.scalar(expr)) != expected:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"Prometheus: {expr} is {got}, expected {expected} "
                                     f"after {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def write_config(root: Path, targets: Sequence[str], rule_files: Sequence[Path] = (),
                 interval: str = "1s") -> Path:
    """prometheus.yml scraping ``targets`` (host:port) every ``interval``."""
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": "popproxy",
                            "static_configs": [{"targets": list(targets)}]}],
    }
    path = root / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


@contextmanager
def running(root: Path, targets: Sequence[str],
            rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    """Start Prometheus in ``root``, wait until /-/ready, stop it afterwards."""
    binary = require("prometheus")
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root, targets, rule_files)
    port = free_port()
    with (root / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    server = Prometheus(proc, port, root)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"Prometheus exited ({proc.returncode}):\n"
                                     f"{server.log_tail()}")
            try:
                if http_get(f"{server.url}/-/ready", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus not ready after {START_TIMEOUT}s:\n"
                                     f"{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition (its lint findings are in the output)."""
    promtool = require("promtool")
    return subprocess.run([promtool, "check", "metrics"], input=exposition.decode(),
                          capture_output=True, text=True, timeout=30)
