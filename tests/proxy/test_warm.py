"""The Warmer against the in-process demo upstream standing in for a master-user login
(``alice*warmer``): pacing with an injected clock (the fake sleep advances it, no real
sleeps), never a DELE, QUIT only after reading, none when interrupted; and the refusals."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from popproxy.policy import Policy, WarmLogin
from popproxy.policy.schema_redis import RedisSentinel
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.warm import (
    Warmer,
    WarmFailed,
    host_file,
    read_password,
    warm_problems,
)
from popproxy.proxy.warm_progress import Display, Pace, ProgressFile

MASTER_PW = b"master-secret"


class FakeTime:
    """A clock only the (fake) sleep moves: what the Warmer asked to wait is recorded."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._interrupt_at = interrupt_at

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self._interrupt_at is not None and len(self.sleeps) == self._interrupt_at:
            raise KeyboardInterrupt
        self.sleeps.append(seconds)
        self.now += seconds


def _policy(tmp_path: Path, port: int) -> Policy:
    secret = tmp_path / "master.secret"
    secret.write_bytes(MASTER_PW + b"\n")
    return Policy.model_validate({
        "listeners": [{"name": "a", "port": 1995, "mode": "tls"}],
        "upstream": {"host": "127.0.0.1", "port": port,
                     "warm_login": {"master_user": "warmer", "password_file": str(secret)}},
        "state_dir": str(tmp_path / "state"), "scan": {"enabled": True},
    })


def _run(tmp_path: Path, demo: DemoUpstream, time: FakeTime, fresh: bool = False,
         users: tuple[str, ...] = ("alice",)) -> tuple[str, int]:
    """Warm ``users`` at 2 messages/s; (the progress output, messages downloaded)."""
    out = io.StringIO()

    async def go() -> int:
        await demo.start()
        policy = _policy(tmp_path, demo.port)
        observer = Observer()
        service = ScanService(policy.scan, policy.state_dir, observer)
        warmer = Warmer(policy, service, observer.metrics,
                        ProgressFile(policy.state_dir, fresh), Display(out, False),
                        Pace(2.0, None), time.clock, time.sleep)
        try:
            return (await warmer.run(list(users))).downloaded
        finally:
            await service.aclose()
            await demo.stop()

    downloaded = asyncio.run(go())
    return out.getvalue(), downloaded


def _demo() -> DemoUpstream:
    return DemoUpstream({b"alice*warmer": Mailbox(MASTER_PW)})


def test_downloads_are_paced_and_the_session_ends_with_quit_only(tmp_path: Path) -> None:
    demo, time = _demo(), FakeTime()
    out, downloaded = _run(tmp_path, demo, time)
    count = len(demo.users[b"alice*warmer"].messages)
    assert downloaded == count and f"{count} messages judged ({count} downloaded)" in out
    # 2 messages/s: the first at once, each later one half a second after the one before.
    assert time.sleeps == [0.0] + [0.5] * (count - 1)
    assert b"DELE" not in demo.commands_seen and demo.commands_seen[-1] == b"QUIT"


def test_cached_messages_are_not_paced_and_a_rerun_skips_the_mailbox(tmp_path: Path) -> None:
    _run(tmp_path, _demo(), FakeTime())
    demo, again = _demo(), FakeTime()
    out, downloaded = _run(tmp_path, demo, again)
    assert "done in an earlier run, skipped" in out and demo.commands_seen == []
    demo, fresh = _demo(), FakeTime()
    out, downloaded = _run(tmp_path, demo, fresh, fresh=True)
    assert downloaded == 0 and set(fresh.sleeps) == {0.0}  # all cached: nothing to pace


def test_an_interrupted_run_closes_without_quit_and_is_not_marked_done(tmp_path: Path) -> None:
    demo = _demo()
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, demo, FakeTime(interrupt_at=2))
    assert b"QUIT" not in demo.commands_seen and b"DELE" not in demo.commands_seen
    assert not (tmp_path / "state" / "warm-done.txt").exists()


def test_a_refused_login_fails_that_mailbox_and_the_run_goes_on(tmp_path: Path) -> None:
    demo = DemoUpstream({b"bob*warmer": Mailbox(MASTER_PW)})  # no alice here
    out, _ = _run(tmp_path, demo, FakeTime(), users=("alice", "bob"))
    assert "mailbox 1/2: FAILED (upstream 'default' refused the master login" in out
    assert "mailbox 2/2: " in out and b"QUIT" in demo.commands_seen


def test_a_user_name_with_a_space_is_refused_before_connecting(tmp_path: Path) -> None:
    demo = _demo()
    out, _ = _run(tmp_path, demo, FakeTime(), users=("al ice",))
    assert "FAILED (not a user name POP3 can carry" in out and demo.commands_seen == []


def test_problems_name_what_to_change(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy(tmp_path, 110).model_copy(update={"workers": 1})
    assert warm_problems(policy, ["alice"], offline=True) == []
    assert "scan.redis_url is not set" in warm_problems(policy, ["alice"], offline=False)[0]
    # Workers share verdicts in the host file, which a running proxy reads at every lookup.
    workers = policy.model_copy(update={"workers": 2})
    monkeypatch.delenv("POPPROXY_WORKERS", raising=False)  # the suite runs one process
    assert warm_problems(workers, ["alice"], offline=False) == []
    assert host_file(workers) == tmp_path / "state" / "host.sqlite3"
    assert host_file(policy) is None
    assert host_file(workers, workers_flag=1) is None  # warm --workers 1, as run was given
    assert host_file(policy, workers_flag=3) == tmp_path / "state" / "host.sqlite3"
    sentinel = {"sentinels": ["10.0.7.31:26379"], "service": "popproxy"}
    shared = policy.model_copy(update={"scan": policy.scan.model_copy(
        update={"redis_sentinel": RedisSentinel.model_validate(sentinel)})})
    assert warm_problems(shared, ["alice"], offline=False) == []  # Sentinel is Redis too


def test_the_master_password_is_the_first_line_and_never_in_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"pw one\r\nsecond line\n")
    login = WarmLogin(master_user="m", password_file=secret)
    assert read_password(login) == b"pw one"
    secret.write_bytes(b"x" * 249 + b"\n")  # "PASS " + 249 + CRLF > 255 (RFC 2449 s4)
    with pytest.raises(WarmFailed) as info:
        read_password(login)
    assert "x" * 20 not in str(info.value)


def test_the_master_password_is_in_no_log_line_output_or_state_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out, _ = _run(tmp_path, _demo(), FakeTime())
    assert "messages judged" in out and caplog.text  # there was something to search
    state_files = [p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert state_files
    for text in (out.encode(), caplog.text.encode(), *state_files):
        assert MASTER_PW not in text
