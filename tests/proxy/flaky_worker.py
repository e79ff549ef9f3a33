"""A scan worker that dies on some jobs: ``python -m tests.proxy.flaky_worker``.

``POPPROXY_TEST_CRASH_ONCE``: a marker file; the first worker to take a job creates it and dies
(a worker lost to the OOM killer), later workers scan normally.  ``POPPROXY_TEST_CRASH_ON``:
every worker dies on a message containing these bytes (a message that crashes the parser).
``POPPROXY_TEST_PRINT``: the scan prints to stdout first (a chatty library).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from popproxy.proxy import scan_jobs, scan_worker
from popproxy.scan import Scanner

_judge = scan_jobs.judge


def judge(scanner: Scanner, message: bytes, truncated: bool = False) -> dict[str, Any]:
    marker = os.environ.get("POPPROXY_TEST_CRASH_ONCE")
    if marker:
        try:
            Path(marker).touch(exist_ok=False)
        except FileExistsError:
            pass
        else:
            os._exit(9)
    if os.environ.get("POPPROXY_TEST_PRINT"):
        print("noise from a library", flush=True)
    poison = os.environ.get("POPPROXY_TEST_CRASH_ON", "").encode()
    if poison and poison in message:
        os._exit(9)
    return _judge(scanner, message, truncated)


if __name__ == "__main__":
    scan_jobs.judge = judge
    scan_worker.main()
