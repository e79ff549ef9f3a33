"""End to end: real proxy sessions with ``--capture``; the files are private and secret-free."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from popproxy.capture import tnetstring
from popproxy.capture.flow import FLOW_FORMAT_VERSION
from popproxy.capture.store import prepare_directory
from popproxy.cli import capture_options
from popproxy.proxy.demo_upstream import DemoUpstream
from tests.capture.sessions import (
    BODY_TEXT,
    PASSWORD,
    SECRETS,
    STAT_REPLY,
    USER,
    capturing_proxy,
    run_sessions,
)
from tests.helpers import LoopThread
from tests.integration.rawpop import RawPOP3, wait_for


def _flows(directory: Path) -> list[dict[str, tnetstring.Value]]:
    flows = []
    for path in sorted(directory.glob("*.mitm")):
        state = tnetstring.loads(path.read_bytes())
        assert isinstance(state, dict)
        flows.append(state)
    return flows


def _stream(flow: dict[str, tnetstring.Value]) -> bytes:
    messages = flow["messages"]
    assert isinstance(messages, list)
    return b"".join(m[1] for m in messages if isinstance(m, list) and isinstance(m[1], bytes))


def test_captures_are_private_and_redacted(loop_thread: LoopThread, demo_upstream: DemoUpstream,
                                           tmp_path: Path) -> None:
    directory = tmp_path / "captures"
    with capturing_proxy(loop_thread, demo_upstream, directory) as server:
        run_sessions(server)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = sorted(directory.glob("*.mitm"))
    assert len(files) == 3
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret not in raw, (path, secret)
        assert BODY_TEXT not in raw  # RETR/TOP bodies are omitted by default
    flows = _flows(directory)
    assert all(f["type"] == "tcp" and f["version"] == FLOW_FORMAT_VERSION for f in flows)
    streams = [_stream(f) for f in flows]
    user_pass = next(s for s in streams if b"USER " in s)
    assert user_pass.startswith(b"+OK POP3 proxy ready\r\n")
    assert b"PASS ***\r\n" in user_pass
    assert b"-ERR [AUTH]" in user_pass and b"+OK logged in" in user_pass
    assert STAT_REPLY in user_pass
    assert b"[body of " in user_pass and user_pass.count(b" octets omitted]\r\n.\r\n") == 2
    assert b"AUTH PLAIN ***\r\n" in b"".join(streams)
    # RFC 5034 s4 / draft-murchison-sasl-login: the proxy asks, the client's answers are hidden.
    assert (b"AUTH LOGIN\r\n+ VXNlcm5hbWU6\r\n***\r\n+ UGFzc3dvcmQ6\r\n***\r\n"
            b"+OK logged in\r\n") in b"".join(streams)
    metadata = [f["metadata"] for f in flows]
    assert {m["popproxy.user"] for m in metadata if isinstance(m, dict)} == {USER}


def test_bodies_kept_on_request(loop_thread: LoopThread, demo_upstream: DemoUpstream,
                                tmp_path: Path) -> None:
    with capturing_proxy(loop_thread, demo_upstream, tmp_path, keep_bodies=True) as server:
        run_sessions(server)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("*.mitm"))
    assert BODY_TEXT in raw
    assert PASSWORD.encode() not in raw  # passwords are redacted all the same


def test_cli_options(tmp_path: Path) -> None:
    assert capture_options(None, False) is None
    with pytest.raises(ValueError, match="--capture DIR"):
        capture_options(None, True)
    options = capture_options(tmp_path / "new" / "dir", True)
    assert options is not None and options.keep_bodies
    assert stat.S_IMODE((tmp_path / "new" / "dir").stat().st_mode) == 0o700
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):
        prepare_directory(tmp_path / "file")


def test_a_capture_that_cannot_be_written_is_logged(loop_thread: LoopThread,
                                                    demo_upstream: DemoUpstream, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "gone"
    with capturing_proxy(loop_thread, demo_upstream, directory) as server:
        directory.rmdir()
        with RawPOP3(server.ports["pop3"]) as c:
            assert c.command("QUIT").startswith(b"+OK")
        wait_for(lambda: server.session_count == 0, what="the session to end")
    assert "capture not written: FileNotFoundError" in caplog.text
