"""The proxy side of captures: what a flow file says about its session, and that a capture
which cannot be written is logged, never raised."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

import pytest

from popproxy.capture import tnetstring
from popproxy.capture.hook import FlowFacts, flow_info, new_recorder, save_capture
from popproxy.capture.recorder import SessionRecorder
from popproxy.capture.store import CaptureOptions
from tests.helpers import make_config

CONFIG = make_config(995)


def _facts(**changes: object) -> FlowFacts:
    facts: dict[str, object] = {
        "id": "s1", "peer": "10.0.0.5:4711", "client_ip": None, "user": "alice",
        "listener": CONFIG.listeners[0], "upstream_name": "default",
        "upstreams": {"default": CONFIG.upstream}, "client_tls_version": "TLSv1.3",
    }
    facts.update(changes)
    return FlowFacts(**facts)  # type: ignore[arg-type]


def _recorder(keep_bodies: bool = False) -> SessionRecorder:
    times = iter([10.0, 11.0, 12.0, 13.0])
    return SessionRecorder(lambda: next(times), keep_bodies)


def test_new_recorder_only_when_capturing(tmp_path: Path) -> None:
    assert new_recorder(None) is None
    recorder = new_recorder(CaptureOptions(tmp_path, keep_bodies=True))
    assert recorder is not None and recorder.keep_bodies


def test_flow_info_names_the_session_and_its_upstream() -> None:
    recorder = _recorder()
    recorder.finish()
    info = flow_info(_facts(), recorder)
    assert info.client == ("10.0.0.5", 4711)
    assert info.listener == (CONFIG.listeners[0].host, CONFIG.listeners[0].port)
    assert info.server == ("127.0.0.1", 995)
    assert not info.server_tls  # a plain upstream
    assert (info.started, info.ended) == (10.0, 11.0)
    assert info.metadata["popproxy.user"] == "alice"
    assert info.metadata["popproxy.bodies"] == "omitted"
    assert info.comment == ("popproxy session s1 on pop3 (user alice); "
                            "passwords and AUTH data redacted (***)")


def test_behind_a_proxy_header_the_real_client_is_named() -> None:
    facts = _facts(client_ip=ipaddress.ip_address("2001:db8::7"), user=None,
                   upstream_name=None)
    info = flow_info(facts, _recorder(keep_bodies=True))
    assert info.client == ("2001:db8::7", 4711)
    assert info.server is None and info.metadata["popproxy.upstream"] is None
    assert info.comment.endswith("message bodies kept (--capture-bodies)")
    assert "(user" not in info.comment


def test_save_capture_writes_one_flow_file(tmp_path: Path) -> None:
    recorder = _recorder()
    recorder.from_proxy(b"+OK POP3 proxy ready\r\n")
    path = asyncio.run(save_capture(_facts(), recorder, CaptureOptions(tmp_path)))
    assert path == tmp_path / "s1.mitm"
    state = tnetstring.loads(path.read_bytes())
    assert isinstance(state, dict)
    assert state["messages"] == [[False, b"+OK POP3 proxy ready\r\n", 11.0]]


def test_a_capture_that_cannot_be_written_is_logged_not_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = CaptureOptions(tmp_path / "missing")
    with caplog.at_level(logging.ERROR, logger="popproxy.capture"):
        assert asyncio.run(save_capture(_facts(), _recorder(), options)) is None
    assert "session s1: capture not written: FileNotFoundError" in caplog.text
