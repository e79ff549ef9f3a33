"""Failed-login lockouts end to end: a real proxy (memory store) in front of the demo upstream.

The pure model is tested with an injected clock in tests/policy/test_lockout.py, the session's
delays, blocks and RFC 3206 replies on the session harness in test_session_lockout.py.  What
stays here runs the real server path: the guard built from the policy (its HMAC key created
in state_dir, private and never logged), and no password in the audit log, the metrics or the
log lines of a whole proxy.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from popproxy.auditlog import AuditLog
from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"

ALICE_PASSWORD = "Correct-Horse-Staple"
WRONG = ["Wrong-Guess-One", "Wrong-Guess-Two", "Wrong-Guess-Three", "Wrong-Guess-Four"]
ALL_PASSWORDS = [ALICE_PASSWORD, *WRONG]

# pair: the 2nd and 3rd failures are delayed (0.1 s, 0.2 s), the 4th attempt is blocked.
BASE_DELAY = 0.1
LOCKOUT: dict[str, Any] = {
    "enabled": True, "window": 60, "pair": {"free": 1, "block_after": 3},
    "base_delay": BASE_DELAY, "max_delay": 2.0,
}


@pytest.fixture
def demo(loop_thread: LoopThread) -> Iterator[DemoUpstream]:
    users = {b"demo": Mailbox(b"demo"), b"alice": Mailbox(ALICE_PASSWORD.encode())}
    with running_demo(loop_thread, DemoUpstream(users=users)) as server:
        yield server


class Audit:
    """An in-memory audit log and the records written to it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.observer = Observer(audit=AuditLog(self.stream))

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self, event: str, **match: object) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.text.splitlines()]
        return [r for r in found
                if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def metrics_text(self) -> str:
        return generate_latest(self.observer.metrics.registry).decode()


def _config(demo: DemoUpstream, tmp_path: Path, **lockout: Any) -> Policy:
    # max_login_failures above the block threshold: one connection sees the whole sequence.
    return make_config(demo.port, state_dir=str(tmp_path), lockout={**LOCKOUT, **lockout},
                       limits={"max_login_failures": 10})


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def proxy(demo: DemoUpstream, loop_thread: LoopThread, tmp_path: Path,
          audit: Audit) -> Iterator[RunningProxy]:
    with running_proxy(_config(demo, tmp_path), loop_thread, audit.observer) as running:
        yield running


def _attempt(c: RawPOP3, user: str, password: str) -> tuple[bytes, float]:
    """USER/PASS on an open connection: the PASS reply and how long it took."""
    assert c.command(f"USER {user}") == b"+OK send PASS\r\n"
    started = time.monotonic()
    reply = c.command(f"PASS {password}")
    return reply, time.monotonic() - started


# --------------------------------------------------------------------------- no secrets
def test_no_password_in_audit_metrics_or_logs(demo: DemoUpstream, proxy: RunningProxy,
                                              audit: Audit, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with RawPOP3(proxy.port) as c:
        for password in WRONG:
            _attempt(c, "alice", password)
        assert _attempt(c, "alice", ALICE_PASSWORD)[0] == LOCKED
        plain = base64.b64encode(f"\0alice\0{ALICE_PASSWORD}".encode()).decode()
        assert c.command(f"AUTH PLAIN {plain}") == LOCKED
        c.login("demo", "demo")
    wait_for(lambda: proxy.server.session_count == 0, what="the session to end")
    assert audit.records("lockout", action="block")
    assert "login locked" in caplog.text  # the session's log lines were captured
    everything = "\n".join([audit.text, audit.metrics_text(), caplog.text])
    for password in ALL_PASSWORDS:
        for form in (password, password.encode().hex(),
                     base64.b64encode(password.encode()).decode()):
            assert form not in everything
    # The HMAC key behind the counter names was generated in state_dir, private, unlogged.
    key_file = tmp_path / "lockout.key"
    assert key_file.stat().st_mode & 0o077 == 0
    assert key_file.read_text().strip() not in everything
