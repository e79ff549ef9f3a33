"""Captures written by popproxy, read back by mitmproxy's own ``mitmproxy.io.FlowReader``.

mitmproxy lives in a virtual environment of its own (``POPPROXY_MITM_PYTHON`` names its
Python); ``.ci/run`` makes one and runs ``pytest -m mitm tests/capture`` in a step of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.capture.sessions import (
    BODY_TEXT,
    SECRETS,
    STAT_REPLY,
    USER,
    capturing_proxy,
    run_sessions,
)
from tests.helpers import LoopThread

pytestmark = pytest.mark.mitm

READER = Path(__file__).with_name("read_with_mitmproxy.py")
READ_TIMEOUT = 120  # seconds: importing mitmproxy on a busy machine takes a few


@pytest.fixture
def mitm_python() -> str:
    python = os.environ.get("POPPROXY_MITM_PYTHON")
    if not python:
        pytest.skip("POPPROXY_MITM_PYTHON is not set: it names the Python of a virtual "
                    "environment with mitmproxy (see .ci/run, step 'mitmproxy capture reader')")
    assert Path(python).exists(), f"POPPROXY_MITM_PYTHON={python} does not exist"
    return python


def read_with_mitmproxy(python: str, files: list[Path]) -> dict[str, Any]:
    done = subprocess.run([python, str(READER), *map(str, files)], capture_output=True,
                          timeout=READ_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_mitmproxy_reads_the_captures(mitm_python: str, loop_thread: LoopThread,
                                      demo_upstream: DemoUpstream, tmp_path: Path) -> None:
    with capturing_proxy(loop_thread, demo_upstream, tmp_path) as server:
        run_sessions(server)
    files = sorted(tmp_path.glob("*.mitm"))
    assert len(files) == 3
    result = read_with_mitmproxy(mitm_python, files)
    flows = result["flows"]
    assert len(flows) == 3, result["mitmproxy"]
    for flow in flows:
        assert flow["type"] == "tcp" and flow["is_tcp_flow"]
        assert flow["client"][0] == "127.0.0.1"
        assert flow["server"] == ["127.0.0.1", demo_upstream.port]  # logged in: the upstream
        assert flow["metadata"]["popproxy.user"] == USER
        assert "redacted" in flow["comment"]
        messages = flow["messages"]
        assert messages[0] == {"from_client": False, "content": "+OK POP3 proxy ready\r\n",
                               "timestamp": messages[0]["timestamp"]}
        stamps = [m["timestamp"] for m in messages]
        assert stamps == sorted(stamps)
        text = "".join(m["content"] for m in messages).encode("latin-1")
        for secret in SECRETS:
            assert secret not in text, secret
        assert BODY_TEXT not in text
        assert STAT_REPLY in text
        assert b"+OK logged in\r\n" in text
        from_client = "".join(m["content"] for m in messages if m["from_client"])
        assert "QUIT\r\n" in from_client and ("PASS ***\r\n" in from_client
                                              or "AUTH " in from_client)
