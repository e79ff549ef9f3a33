"""Failed-login lockouts end to end: a real proxy (memory store) in front of the demo upstream.

The pure model is tested with an injected clock in tests/policy/test_lockout.py; here the
sessions see real (small) delays, the exact RFC 3206 reply, what reaches the upstream, and
what the audit log, the metrics and the logs say about it.
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
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"

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

    def sample(self, name: str, **labels: str) -> float:
        value = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

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


def _passes(demo: DemoUpstream) -> int:
    return demo.commands_seen.count(b"PASS")


def _fail_three_times(port: int, user: str = "alice") -> list[tuple[bytes, float]]:
    with RawPOP3(port) as c:
        return [_attempt(c, user, password) for password in WRONG[:3]]


# --------------------------------------------------------------------------- delays, block
def test_wrong_passwords_are_delayed_then_blocked(demo: DemoUpstream, proxy: RunningProxy,
                                                  audit: Audit) -> None:
    with RawPOP3(proxy.port) as c:
        results = [_attempt(c, "alice", password) for password in WRONG[:3]]
        assert [reply for reply, _ in results] == [AUTH_FAILED] * 3
        # free=1: the first failure costs nothing, then base_delay * 2**(n - free).
        assert results[1][1] >= BASE_DELAY
        assert results[2][1] >= 2 * BASE_DELAY
        assert _passes(demo) == 3

        seen = len(demo.commands_seen)
        blocked, _ = _attempt(c, "alice", WRONG[3])
        assert blocked == LOCKED  # exactly: RFC 3206 SYS/TEMP, "wait", not "wrong password"
        # The block comes before the password check: the right password is refused too ...
        assert _attempt(c, "alice", ALICE_PASSWORD)[0] == LOCKED
        # ... and the upstream heard of neither attempt.
        assert demo.commands_seen[seen:] == []
        # The session is still in AUTHORIZATION and usable.
        assert c.command("QUIT") == b"+OK bye\r\n"

    delays = audit.records("lockout", action="delay")
    assert [(r["scope"], r["delay"], r["user"], r["client"]) for r in delays] == [
        ("pair", BASE_DELAY, "alice", "127.0.0.1"), ("pair", 2 * BASE_DELAY, "alice", "127.0.0.1")]
    blocks = audit.records("lockout", action="block")
    assert [(r["scope"], r["user"], r["client"]) for r in blocks] == [
        ("pair", "alice", "127.0.0.1")] * 2
    assert len(audit.records("login", result="bad_credentials", user="alice")) == 3
    locked = audit.records("login", result="locked")
    assert [(r["user"], r["client"], r["scope"], r["mechanism"]) for r in locked] == [
        ("alice", "127.0.0.1", "pair", "USER")] * 2
    assert audit.records("login", result="ok") == []

    assert audit.sample("popproxy_lockout_blocks_total", scope="pair") == 2
    assert audit.sample("popproxy_logins_total", result="locked") == 2
    assert audit.sample("popproxy_logins_total", result="bad_credentials") == 3
    assert audit.sample("popproxy_lockouts_active", scope="pair") == 1


def test_block_outlives_the_connection_and_covers_sasl(demo: DemoUpstream, proxy: RunningProxy,
                                                       audit: Audit) -> None:
    _fail_three_times(proxy.port)
    seen = len(demo.commands_seen)
    with RawPOP3(proxy.port) as c:  # a new connection from the same network: still blocked
        assert _attempt(c, "alice", ALICE_PASSWORD)[0] == LOCKED
        # Case does not help (usernames are case-folded into one counter).
        assert _attempt(c, "ALICE", ALICE_PASSWORD)[0] == LOCKED
        plain = base64.b64encode(f"\0alice\0{ALICE_PASSWORD}".encode()).decode()
        assert c.command(f"AUTH PLAIN {plain}") == LOCKED
        # AUTH LOGIN: the block is applied once the password step arrives.
        assert c.command("AUTH LOGIN").startswith(b"+ ")
        assert c.command(base64.b64encode(b"alice")).startswith(b"+ ")
        assert c.command(base64.b64encode(ALICE_PASSWORD.encode())) == LOCKED
        assert c.command("NOOP") == b"-ERR NOOP is not valid in this state\r\n"
        # The pair is blocked, not the network: another account from here still logs in.
        c.login("demo", "demo")
        assert c.command("QUIT") == b"+OK bye\r\n"
    assert demo.commands_seen[seen:] == [b"USER", b"PASS", b"QUIT"]
    locked = audit.records("login", result="locked")
    assert [r["mechanism"] for r in locked] == ["USER", "USER", "PLAIN", "LOGIN"]
    assert audit.sample("popproxy_logins_total", result="locked") == 4
    assert audit.sample("popproxy_logins_total", result="ok") == 1


def test_blocked_attempts_end_the_session_at_max_login_failures(
        demo: DemoUpstream, loop_thread: LoopThread, tmp_path: Path, audit: Audit) -> None:
    config = make_config(demo.port, state_dir=str(tmp_path), lockout=LOCKOUT,
                         limits={"max_login_failures": 3})
    with running_proxy(config, loop_thread, audit.observer) as proxy:
        _fail_three_times(proxy.port)  # the third failure also closes that connection
        with RawPOP3(proxy.port) as c:
            for _ in range(3):
                assert _attempt(c, "alice", ALICE_PASSWORD)[0] == LOCKED
            assert c.read_until_eof() == b""  # a blocked guesser cannot hold the session
    assert len(audit.records("login", result="locked")) == 3


def test_same_wrong_password_counts_once(demo: DemoUpstream, proxy: RunningProxy,
                                         audit: Audit) -> None:
    with RawPOP3(proxy.port) as c:
        for _ in range(5):  # a client retrying a stale password is not a guesser
            assert _attempt(c, "alice", WRONG[0])[0] == AUTH_FAILED
        assert _attempt(c, "alice", ALICE_PASSWORD)[0].startswith(b"+OK")
    assert audit.records("lockout", action="block") == []
    # free=1 and one distinct failure: every retry after the first waits base_delay.
    assert {r["delay"] for r in audit.records("lockout", action="delay")} == {BASE_DELAY}


def test_successful_login_clears_the_pair(demo: DemoUpstream, proxy: RunningProxy,
                                          audit: Audit) -> None:
    with RawPOP3(proxy.port) as c:
        for password in WRONG[:2]:
            assert _attempt(c, "alice", password)[0] == AUTH_FAILED
        c.login("alice", ALICE_PASSWORD)  # delayed (two failures), then logged in
    with RawPOP3(proxy.port) as c:
        for password in WRONG[:3]:  # the pair counter starts over: no block at the 3rd
            assert _attempt(c, "alice", password)[0] == AUTH_FAILED
    delays = [r["delay"] for r in audit.records("lockout", action="delay")]
    assert delays == [BASE_DELAY, 2 * BASE_DELAY] * 2
    assert audit.records("lockout", action="block") == []


# --------------------------------------------------------------------------- other sessions
def test_delay_slows_only_the_guessing_session(demo: DemoUpstream, loop_thread: LoopThread,
                                               tmp_path: Path, audit: Audit) -> None:
    delay = 1.0
    config = _config(demo, tmp_path, base_delay=delay)
    with running_proxy(config, loop_thread, audit.observer) as proxy, \
            RawPOP3(proxy.port) as guesser:
        assert _attempt(guesser, "alice", WRONG[0])[0] == AUTH_FAILED
        assert guesser.command("USER alice") == b"+OK send PASS\r\n"
        started = time.monotonic()
        guesser.send(f"PASS {WRONG[1]}\r\n".encode())  # answered only after `delay`
        wait_for(lambda: bool(audit.records("lockout", action="delay")),
                 what="the guessing session to start its delay")

        with RawPOP3(proxy.port) as other:  # same source, other account: not held up
            t0 = time.monotonic()
            other.login("demo", "demo")
            assert other.command("QUIT") == b"+OK bye\r\n"
            assert time.monotonic() - t0 < delay / 2

        assert guesser.read_line() == AUTH_FAILED
        assert time.monotonic() - started >= delay
    assert audit.records("lockout", action="delay")[0]["delay"] == delay


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
