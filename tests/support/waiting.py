"""Polling for a condition that another thread or process makes true."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# How often a condition is checked: short next to every timeout used, cheap on 2 shared cores.
POLL_INTERVAL = 0.02


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; ``AssertionError`` after ``timeout`` seconds.

    For waiting until something *happens*; never for proving that something did not.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def run_until_ready_then_stop(cmd: list[str], output: Path, cwd: Path,
                              env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Run ``popproxy run`` (``cmd``) with stdout and stderr into ``output`` until it says
    "popproxy ready", then SIGTERM it and check it exits 0; its whole output (killed if it
    hangs, so no process outlives the test)."""
    with output.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (proc.poll() is None and "popproxy ready" in output.read_text())
                 or proc.poll() is not None, timeout, "popproxy ready")
        assert proc.poll() is None, output.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return output.read_text()
