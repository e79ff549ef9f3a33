"""A scan worker with faults switched on from the test: ``python -m tests.faults.fault_worker``.

The test writes a mode into the file named by ``POPPROXY_TEST_FAULT_FILE`` (read before every
job, so a test can break and repair the scanner while workers run):

- ``raise``: the scanner raises (a bug an attacker found);
- ``stuck``: the scanner never returns (the worker must be killed at its deadline);
- ``action-raises``: rendering tag/defang raises; ``notice-raises``: rendering a quarantine
  notice raises;
- empty or missing: the real scanner.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from popproxy.proxy import scan_jobs, scan_worker
from popproxy.scan import Scanner, ScanSettings

FAULT_FILE_ENV = "POPPROXY_TEST_FAULT_FILE"
_judge, _render = scan_jobs.judge, scan_jobs.render


def mode() -> str:
    try:
        return Path(os.environ[FAULT_FILE_ENV]).read_text().strip()
    except (KeyError, OSError):
        return ""


def judge(scanner: Scanner, message: bytes, truncated: bool = False) -> dict[str, Any]:
    if mode() == "raise":
        raise RuntimeError("scanner bug")
    if mode() == "stuck":
        while True:
            time.sleep(1)
    return _judge(scanner, message, truncated)


def render(config: ScanSettings, original: bytes, order: scan_jobs.RenderOrder) -> bytes:
    if mode() == "action-raises" and order.action in ("tag", "defang"):
        raise ValueError("hostile MIME")
    if mode() == "notice-raises" and order.action == "quarantine":
        raise RuntimeError("notice failed")
    return _render(config, original, order)


if __name__ == "__main__":
    scan_jobs.judge = judge
    scan_jobs.render = render
    scan_worker.main()
