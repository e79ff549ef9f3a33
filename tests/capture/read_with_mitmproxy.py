"""Read capture files with mitmproxy's own ``FlowReader``; print the flows as JSON.

Runs with the Python of a separate virtual environment that has mitmproxy (mitmproxy pins an
older ``cryptography`` than popproxy on Python 3.11, so they cannot share one):

    /tmp/popproxy-mitm-venv/bin/python tests/capture/read_with_mitmproxy.py DIR/*.mitm

Message contents are given as Latin-1 text (one character per byte, lossless).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from mitmproxy import flow as mitm_flow
from mitmproxy import io, tcp, version


def describe(path: str, flow: mitm_flow.Flow) -> dict[str, Any]:
    """What the test checks of one flow, as mitmproxy understood it."""
    result: dict[str, Any] = {
        "file": path,
        "type": flow.type,
        "is_tcp_flow": isinstance(flow, tcp.TCPFlow),
        "client": list(flow.client_conn.peername),
        "client_tls": flow.client_conn.tls,
        "server": None if flow.server_conn.address is None else list(flow.server_conn.address),
        "comment": flow.comment,
        "metadata": flow.metadata,
        "messages": [],
    }
    if isinstance(flow, tcp.TCPFlow):
        result["messages"] = [
            {"from_client": m.from_client, "content": m.content.decode("latin-1"),
             "timestamp": m.timestamp}
            for m in flow.messages
        ]
    return result


def main(paths: list[str]) -> int:
    flows = []
    for path in paths:
        with open(path, "rb") as file:
            flows += [describe(path, flow) for flow in io.FlowReader(file).stream()]
    json.dump({"mitmproxy": version.VERSION, "flows": flows}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
