"""A login refused by a policy rule takes as long as one refused by the upstream: the session's
failure floor on the session harness, timed on its virtual clock.

Moved from test_login_timing.py, where a loopback upstream slept before each -ERR and the test
compared wall-clock times within 50 ms (flaky on a loaded machine).  On the virtual clock the
times are exact: ``SessionSettings.clock`` is the loop's clock, the scripted upstream's PASS
answer takes ``UPSTREAM_DELAY`` of it, and the floor's sleep runs on it too.
"""

from __future__ import annotations

from typing import Any

import pytest

from popproxy.policy import Policy
from popproxy.proxy.failure_timing import MARGIN, FailureTiming
from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair, run

AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
UPSTREAM_DELAY = 0.6  # the scripted upstream's own failure delay
FAST_DELAY = 0.05  # the fast upstream's
FLOOR = 0.2  # limits.auth_failure_delay, shorter than the upstream's delay
SLOW_PORT = 2110

# Users refused by the policy, each by another kind of rule (plain listener).
USER_RULES: list[dict[str, Any]] = [
    {"match": "netguarded", "allow": ["10.0.0.0/8"]},
    {"match": "tlsonly", "require_tls": True},
    {"match": "plainonly", "mechanisms": ["PLAIN"]},  # tried with USER/PASS below
    {"match": "guarded@slow.example", "allow": ["10.0.0.0/8"]},
    {"match": "guarded@fast.example", "allow": ["10.0.0.0/8"]},
]


def _refusing(delay: float) -> ScriptedUpstream:
    """Answers PASS after ``delay``: +OK for the password "right", else -ERR."""
    def answer(line: bytes) -> bytes:
        verb = line.split(b" ", 1)[0]
        if verb == b"PASS":
            return b"+OK in\r\n" if line == b"PASS right" else b"-ERR [AUTH] invalid login\r\n"
        return b"-ERR no CAPA here\r\n" if verb == b"CAPA" else b"+OK\r\n"

    return ScriptedUpstream(respond=lambda: answer, delays={"PASS": delay})


class Proxy:
    """Sessions sharing one config, upstream and learned failure timing (as a server's do)."""

    def __init__(self, upstream: ScriptedUpstream, floor: float = FLOOR,
                 **overrides: Any) -> None:
        self.config: Policy = make_config(110, limits={"auth_failure_delay": floor},
                                          users=USER_RULES, **overrides)
        self.upstream = upstream
        self.timing = FailureTiming()

    def login(self, user: str, password: str = "wrong") -> tuple[bytes, float]:
        """A new session's USER/PASS: the PASS reply and its virtual seconds."""
        result: list[tuple[bytes, float]] = []

        async def main() -> None:
            async with SessionPair(self.config, self.upstream,
                                   failure_timing=self.timing) as pair:
                assert (await pair.exchange(f"USER {user}\r\n".encode())).startswith(b"+OK")
                started = pair.now()
                reply = await pair.exchange(f"PASS {password}\r\n".encode())
                result.append((reply, pair.now() - started))

        run(main)
        return result[0]

    def refusal_time(self, user: str, password: str = "wrong") -> float:
        reply, seconds = self.login(user, password)
        assert reply == AUTH_FAILED
        return seconds


@pytest.mark.parametrize("denied_user", ["netguarded", "tlsonly", "plainonly"])
def test_policy_refusal_takes_as_long_as_an_upstream_refusal_once_one_was_seen(
    denied_user: str,
) -> None:
    proxy = Proxy(_refusing(UPSTREAM_DELAY))
    first_upstream = proxy.refusal_time("alice")  # learned from here on
    policy = proxy.refusal_time(denied_user)
    upstream_again = proxy.refusal_time("bob")
    policy_again = proxy.refusal_time(denied_user)
    assert proxy.upstream.verbs.count("PASS") == 2  # the denied user never reached it
    # Learned from the first refusal on (it is held to it too): the same time for all, not
    # the 0.2 s floor.
    learned = pytest.approx(UPSTREAM_DELAY + MARGIN)
    assert first_upstream == policy == upstream_again == policy_again == learned


def test_configured_floor_above_the_upstream_delay_hides_it_from_the_first_refusal() -> None:
    """With ``auth_failure_delay`` >= the upstream's delay, nothing has to be learned first
    (e.g. just after a start): both answers come at the floor."""
    floor = UPSTREAM_DELAY + 0.2
    proxy = Proxy(_refusing(UPSTREAM_DELAY), floor=floor)
    policy = proxy.refusal_time("netguarded")  # before any upstream refusal
    upstream = proxy.refusal_time("alice")
    assert policy == upstream == pytest.approx(floor)


def test_each_upstream_sets_the_timing_of_the_users_routed_to_it() -> None:
    """A policy refusal matches the upstream the user would have been sent to: a user of the
    fast upstream does not wait for the slow one, and a slow one's user is not answered fast."""
    fast = _refusing(FAST_DELAY)
    fast.routes = {SLOW_PORT: _refusing(UPSTREAM_DELAY)}
    proxy = Proxy(fast, upstreams={"slow": {"host": "127.0.0.1", "port": SLOW_PORT}},
                  routes=[{"match": "*@slow.example", "upstream": "slow"}])
    slow_upstream = proxy.refusal_time("someone@slow.example", "x")
    fast_upstream = proxy.refusal_time("someone@fast.example", "x")
    slow_policy = proxy.refusal_time("guarded@slow.example")
    fast_policy = proxy.refusal_time("guarded@fast.example")
    slow_upstream_again = proxy.refusal_time("other@slow.example", "x")
    fast_upstream_again = proxy.refusal_time("other@fast.example", "x")
    slow_time = pytest.approx(UPSTREAM_DELAY + MARGIN)
    assert slow_upstream == slow_policy == slow_upstream_again == slow_time
    fast_time = pytest.approx(max(FLOOR, FAST_DELAY + MARGIN))  # 0.05 s learned: under FLOOR
    assert fast_upstream == fast_policy == fast_upstream_again == fast_time
    assert fast_policy < UPSTREAM_DELAY - 0.2


def test_successful_login_is_not_held_to_the_learned_delay() -> None:
    proxy = Proxy(_refusing(0.3))
    proxy.refusal_time("alice")
    reply, seconds = proxy.login("alice", "right")
    assert reply.startswith(b"+OK")
    assert seconds == pytest.approx(0.3)  # the upstream's time only
