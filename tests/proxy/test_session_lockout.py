"""Failed-login lockouts in the session, on the session harness with a virtual clock.

Moved from test_lockout_session.py, where a real proxy slept through each delay.  Here the
guard (memory store) sleeps on the loop's virtual clock, so each delay is checked exactly;
the pure model is tested in tests/policy/test_lockout.py.  These check the exact RFC 3206
reply, what reaches the upstream, and what the audit log and the metrics say.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.lockout_store import MemoryStore
from tests.faults.support import Observed
from tests.helpers import make_config
from tests.support.harness import (
    MAX_SETTLE_STEPS,
    ScriptedUpstream,
    SessionPair,
    demo_responder,
    run,
)

LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
ALICE_PASSWORD = "Correct-Horse-Staple"
WRONG = ["Wrong-Guess-One", "Wrong-Guess-Two", "Wrong-Guess-Three", "Wrong-Guess-Four"]
CLIENT = "127.0.0.1"

# pair: the 2nd and 3rd failures are delayed (0.1 s, 0.2 s), the 4th attempt is blocked.
BASE_DELAY = 0.1
LOCKOUT: dict[str, Any] = {
    "enabled": True, "window": 60, "pair": {"free": 1, "block_after": 3},
    "base_delay": BASE_DELAY, "max_delay": 2.0,
}

Pairs = Callable[[], SessionPair]  # a new session from CLIENT, sharing the guard and upstream


class Lockouts:
    """One guard, one upstream and one audit log shared by the sessions of a test."""

    def __init__(self, max_login_failures: int = 10, **lockout: Any) -> None:
        # max_login_failures above the block threshold: one session sees the whole sequence.
        self.config = make_config(110, lockout={**LOCKOUT, **lockout},
                                  limits={"max_login_failures": max_login_failures})
        self.observed = Observed.new()
        users = {b"demo": Mailbox(b"demo"), b"alice": Mailbox(ALICE_PASSWORD.encode())}
        self.upstream = ScriptedUpstream(respond=demo_responder(DemoUpstream(users)))
        self.delays_started = 0  # the guard's sleeps begun: an explicit event, not a poll

    async def _sleep(self, seconds: float) -> None:
        self.delays_started += 1
        await asyncio.sleep(seconds)  # on the virtual clock

    def run(self, script: Callable[[Pairs], Awaitable[None]]) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            guard = LockoutGuard(self.config.lockout, MemoryStore(), b"k" * 32,
                                 self.observed.observer, clock=loop.time, sleep=self._sleep)
            await script(lambda: SessionPair(self.config, self.upstream, self.observed.observer,
                                             client=CLIENT, lockout=guard))

        run(main)

    def passes(self) -> int:
        return self.upstream.verbs.count("PASS")


async def _attempt(pair: SessionPair, user: str, password: str) -> tuple[bytes, float]:
    """USER/PASS in a session: the PASS reply and how long it took (virtual seconds)."""
    assert await pair.exchange(f"USER {user}\r\n".encode()) == b"+OK send PASS\r\n"
    started = pair.now()
    reply = await pair.exchange(f"PASS {password}\r\n".encode())
    return reply, pair.now() - started


async def _fail_three_times(pairs: Pairs) -> None:
    async with pairs() as pair:
        for password in WRONG[:3]:
            await _attempt(pair, "alice", password)


def test_wrong_passwords_are_delayed_then_blocked() -> None:
    lockouts = Lockouts()

    async def script(pairs: Pairs) -> None:
        async with pairs() as pair:
            results = [await _attempt(pair, "alice", password) for password in WRONG[:3]]
            assert [reply for reply, _ in results] == [AUTH_FAILED] * 3
            # free=1: the first failure costs nothing, then base_delay * 2**(n - free).
            assert [t for _, t in results] == pytest.approx([0, BASE_DELAY, 2 * BASE_DELAY])
            assert lockouts.passes() == 3
            seen = len(lockouts.upstream.lines)
            # exactly: RFC 3206 SYS/TEMP, "wait", not "wrong password"
            assert (await _attempt(pair, "alice", WRONG[3]))[0] == LOCKED
            # The block comes before the password check: the right password is refused too ...
            assert (await _attempt(pair, "alice", ALICE_PASSWORD))[0] == LOCKED
            # ... and the upstream heard of neither attempt.
            assert lockouts.upstream.lines[seen:] == []
            # The session is still in AUTHORIZATION and usable.
            assert await pair.exchange(b"QUIT\r\n") == b"+OK bye\r\n"

    lockouts.run(script)
    events, sample = lockouts.observed.events, lockouts.observed.sample
    assert [(r["scope"], r["delay"], r["user"], r["client"])
            for r in events("lockout", action="delay")] == [
        ("pair", BASE_DELAY, "alice", CLIENT), ("pair", 2 * BASE_DELAY, "alice", CLIENT)]
    assert [(r["scope"], r["user"], r["client"]) for r in events("lockout", action="block")] == [
        ("pair", "alice", CLIENT)] * 2
    assert len(events("login", result="bad_credentials", user="alice")) == 3
    assert [(r["user"], r["client"], r["scope"], r["mechanism"])
            for r in events("login", result="locked")] == [("alice", CLIENT, "pair", "USER")] * 2
    assert events("login", result="ok") == []
    assert sample("popproxy_lockout_blocks_total", scope="pair") == 2
    assert sample("popproxy_logins_total", result="locked") == 2
    assert sample("popproxy_logins_total", result="bad_credentials") == 3
    assert sample("popproxy_lockouts_active", scope="pair") == 1


def test_block_outlives_the_connection_and_covers_sasl() -> None:
    lockouts = Lockouts()

    async def script(pairs: Pairs) -> None:
        await _fail_three_times(pairs)
        seen = len(lockouts.upstream.verbs)
        async with pairs() as pair:  # a new session from the same network: still blocked
            assert (await _attempt(pair, "alice", ALICE_PASSWORD))[0] == LOCKED
            # Case does not help (usernames are case-folded into one counter).
            assert (await _attempt(pair, "ALICE", ALICE_PASSWORD))[0] == LOCKED
            plain = base64.b64encode(f"\0alice\0{ALICE_PASSWORD}".encode())
            assert await pair.exchange(b"AUTH PLAIN " + plain + b"\r\n") == LOCKED
            # AUTH LOGIN: the block is applied once the password step arrives.
            assert (await pair.exchange(b"AUTH LOGIN\r\n")).startswith(b"+ ")
            assert (await pair.exchange(base64.b64encode(b"alice") + b"\r\n")).startswith(b"+ ")
            password = base64.b64encode(ALICE_PASSWORD.encode())
            assert await pair.exchange(password + b"\r\n") == LOCKED
            assert await pair.exchange(b"NOOP\r\n") == b"-ERR NOOP is not valid in this state\r\n"
            # The pair is blocked, not the network: another account from here still logs in.
            assert (await _attempt(pair, "demo", "demo"))[0].startswith(b"+OK")
            assert await pair.exchange(b"QUIT\r\n") == b"+OK bye\r\n"
        assert [v for v in lockouts.upstream.verbs[seen:] if v != "CAPA"] == [
            "USER", "PASS", "QUIT"]

    lockouts.run(script)
    locked = lockouts.observed.events("login", result="locked")
    assert [r["mechanism"] for r in locked] == ["USER", "USER", "PLAIN", "LOGIN"]
    assert lockouts.observed.sample("popproxy_logins_total", result="locked") == 4
    assert lockouts.observed.sample("popproxy_logins_total", result="ok") == 1


def test_blocked_attempts_end_the_session_at_max_login_failures() -> None:
    lockouts = Lockouts(max_login_failures=3)

    async def script(pairs: Pairs) -> None:
        await _fail_three_times(pairs)  # the third failure also closes that session
        async with pairs() as pair:
            for _ in range(3):
                assert (await _attempt(pair, "alice", ALICE_PASSWORD))[0] == LOCKED
            # a blocked guesser cannot hold the session
            assert pair.ended and pair.closed

    lockouts.run(script)
    assert len(lockouts.observed.events("login", result="locked")) == 3


def test_same_wrong_password_counts_once() -> None:
    lockouts = Lockouts()

    async def script(pairs: Pairs) -> None:
        async with pairs() as pair:
            for _ in range(5):  # a client retrying a stale password is not a guesser
                assert (await _attempt(pair, "alice", WRONG[0]))[0] == AUTH_FAILED
            assert (await _attempt(pair, "alice", ALICE_PASSWORD))[0].startswith(b"+OK")

    lockouts.run(script)
    assert lockouts.observed.events("lockout", action="block") == []
    # free=1 and one distinct failure: every retry after the first waits base_delay.
    assert {r["delay"] for r in lockouts.observed.events("lockout", action="delay")} == {
        BASE_DELAY}


def test_successful_login_clears_the_pair() -> None:
    lockouts = Lockouts()

    async def script(pairs: Pairs) -> None:
        async with pairs() as pair:
            for password in WRONG[:2]:
                assert (await _attempt(pair, "alice", password))[0] == AUTH_FAILED
            # delayed (two failures), then logged in
            assert (await _attempt(pair, "alice", ALICE_PASSWORD))[0].startswith(b"+OK")
        async with pairs() as pair:
            for password in WRONG[:3]:  # the pair counter starts over: no block at the 3rd
                assert (await _attempt(pair, "alice", password))[0] == AUTH_FAILED

    lockouts.run(script)
    delays = [r["delay"] for r in lockouts.observed.events("lockout", action="delay")]
    assert delays == [BASE_DELAY, 2 * BASE_DELAY] * 2
    assert lockouts.observed.events("lockout", action="block") == []


def test_delay_slows_only_the_guessing_session() -> None:
    delay = 1.0
    lockouts = Lockouts(base_delay=delay)

    async def script(pairs: Pairs) -> None:
        async with pairs() as guesser:
            assert (await _attempt(guesser, "alice", WRONG[0]))[0] == AUTH_FAILED
            assert await guesser.exchange(b"USER alice\r\n") == b"+OK send PASS\r\n"
            started = guesser.now()
            guesser.feed(f"PASS {WRONG[1]}\r\n".encode())  # no settle: it waits
            for _ in range(MAX_SETTLE_STEPS):  # until the guessing session starts its delay
                if lockouts.delays_started:
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("the guessing session never started its delay")
            async with pairs() as other:  # same source, other account: not held up
                assert (await _attempt(other, "demo", "demo"))[0].startswith(b"+OK")
                assert await other.exchange(b"QUIT\r\n") == b"+OK bye\r\n"
                assert other.now() == started  # no time passed for it
            assert guesser.received() == b""  # the guesser is still waiting
            await guesser.settle()  # nothing else to run: the clock jumps to the delay's end
            assert guesser.received() == AUTH_FAILED
            assert guesser.now() - started == pytest.approx(delay)

    lockouts.run(script)
    assert lockouts.observed.events("lockout", action="delay")[0]["delay"] == delay
