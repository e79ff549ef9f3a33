"""One worker of a host, for tests: ``python -m tests.integration.host_worker DB ID run ...``.

Exactly ``popproxy run ...`` (the same ``cli.main``), except that its ProxyServer gets
``HostShare(DB, ID, HOST_WORKERS)``: a real separate process sharing the host's SQLite file
and session table, as the workers the supervisor starts (issue 18 item 1) do.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from popproxy import cli
from popproxy.proxy.host_state import HostShare
from popproxy.proxy.server import ProxyServer

# The host's session table has a column per worker, sized by the first process that makes
# it: room for the ids test_host_share.py starts (1 to 3), as the supervisor's workers number.
HOST_WORKERS = 4


def main(argv: list[str]) -> int:
    db, worker, *run = argv
    share = HostShare(Path(db), int(worker), HOST_WORKERS)
    vars(cli)["ProxyServer"] = functools.partial(ProxyServer, host=share)
    return cli.main(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
