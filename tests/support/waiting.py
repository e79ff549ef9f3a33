"""Polling for a condition that another thread or process makes true."""

from __future__ import annotations

import time
from collections.abc import Callable

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
