"""A scan worker whose scanner and renderer never return on a marked message (pure Python,
holding the GIL), for the tests of the kill path: ``python -m tests.proxy.spin_worker``."""

from __future__ import annotations

from typing import Any

from popproxy.proxy import scan_jobs, scan_worker
from popproxy.scan import Scanner, ScanSettings

SPIN_MARK = b"X-Test-Spin: forever"
_judge, _render = scan_jobs.judge, scan_jobs.render


def _spin() -> None:
    n = 0
    while True:  # what a catastrophic regex does: busy, in the interpreter, forever
        n += 1


def judge(scanner: Scanner, message: bytes, truncated: bool = False) -> dict[str, Any]:
    if SPIN_MARK in message:
        _spin()
    return _judge(scanner, message, truncated)


def render(config: ScanSettings, original: bytes, order: scan_jobs.RenderOrder) -> bytes:
    if SPIN_MARK in original:
        _spin()
    return _render(config, original, order)


if __name__ == "__main__":
    scan_jobs.judge = judge
    scan_jobs.render = render
    scan_worker.main()
