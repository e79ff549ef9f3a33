"""A login refused by a policy rule takes as long as one refused by the upstream.

The attack: time the ``-ERR``.  A ``users:`` rule refused at the proxy's floor (1.00 s) while
the upstream refused a wrong password after its own failure delay (Dovecot: up to 2 s), so a
guesser could tell which accounts a rule guards, i.e. that they exist.  The proxy learns each
upstream's refusal time and holds every refusal (policy or upstream) for the same span.
The learner on its own is tested in test_failure_timing.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.helpers import LoopbackServer, LoopThread, RunningProxy, make_config, running_proxy

AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
TOLERANCE = 0.05  # the bar: identical timing within 50 ms
UPSTREAM_DELAY = 0.6  # the fake upstream's own failure delay
FLOOR = 0.2  # limits.auth_failure_delay, shorter than the upstream's delay


class SlowRefusingUpstream(LoopbackServer):
    """A POP3 server that answers PASS after ``delay`` seconds: -ERR, or +OK for ``right``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.passes = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK slow upstream\r\n")
        try:
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"PASS":
                    self.passes += 1
                    await asyncio.sleep(self.delay)
                    writer.write(b"+OK in\r\n" if line.strip() == b"PASS right"
                                 else b"-ERR [AUTH] invalid login\r\n")
                elif verb == b"CAPA":
                    writer.write(b"-ERR no CAPA here\r\n")
                else:
                    writer.write(b"+OK\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@contextmanager
def _upstream(loop: LoopThread, delay: float) -> Iterator[tuple[SlowRefusingUpstream, int]]:
    upstream = SlowRefusingUpstream(delay)
    port = loop.call(upstream.start())
    try:
        yield upstream, port
    finally:
        loop.call(upstream.stop())


# Users refused by the policy, each by another kind of rule (client 127.0.0.1, plain listener).
USER_RULES: list[dict[str, Any]] = [
    {"match": "netguarded", "allow": ["10.0.0.0/8"]},
    {"match": "tlsonly", "require_tls": True},
    {"match": "plainonly", "mechanisms": ["PLAIN"]},  # tried with USER/PASS below
    {"match": "guarded@slow.example", "allow": ["10.0.0.0/8"]},
    {"match": "guarded@fast.example", "allow": ["10.0.0.0/8"]},
]


@contextmanager
def _proxy(loop: LoopThread, port: int, floor: float = FLOOR,
           **overrides: Any) -> Iterator[RunningProxy]:
    config = make_config(port, limits={"auth_failure_delay": floor}, users=USER_RULES,
                         **overrides)
    with running_proxy(config, loop) as proxy:
        yield proxy


def refusal_time(port: int, user: str, password: str = "wrong") -> float:
    """Seconds from sending PASS to the -ERR (the failed-login reply is checked)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies = sock.makefile("rb")
        replies.readline()
        sock.sendall(f"USER {user}\r\n".encode())
        assert replies.readline().startswith(b"+OK")
        started = time.monotonic()
        sock.sendall(f"PASS {password}\r\n".encode())
        answer = replies.readline()
        elapsed = time.monotonic() - started
    assert answer == AUTH_FAILED
    return elapsed


@pytest.mark.parametrize("denied_user", ["netguarded", "tlsonly", "plainonly"])
def test_policy_refusal_takes_as_long_as_an_upstream_refusal_once_one_was_seen(
    denied_user: str, loop_thread: LoopThread
) -> None:
    with _upstream(loop_thread, UPSTREAM_DELAY) as (upstream, port), \
            _proxy(loop_thread, port) as proxy:
        first_upstream = refusal_time(proxy.port, "alice")  # learned from here on
        policy = refusal_time(proxy.port, denied_user)
        upstream_again = refusal_time(proxy.port, "bob")
        policy_again = refusal_time(proxy.port, denied_user)
    assert upstream.passes == 2  # the denied user never reached the upstream
    assert first_upstream >= UPSTREAM_DELAY
    assert policy >= UPSTREAM_DELAY  # not the 0.2 s floor any more
    assert abs(policy - upstream_again) < TOLERANCE, (policy, upstream_again)
    assert abs(policy_again - upstream_again) < TOLERANCE, (policy_again, upstream_again)


def test_configured_floor_above_the_upstream_delay_hides_it_from_the_first_refusal(
    loop_thread: LoopThread,
) -> None:
    """With ``auth_failure_delay`` >= the upstream's delay, nothing has to be learned first
    (e.g. just after a start): both answers come at the floor."""
    floor = UPSTREAM_DELAY + 0.2
    with _upstream(loop_thread, UPSTREAM_DELAY) as (_, port), \
            _proxy(loop_thread, port, floor=floor) as proxy:
        policy = refusal_time(proxy.port, "netguarded")  # before any upstream refusal
        upstream = refusal_time(proxy.port, "alice")
    assert floor <= policy < floor + TOLERANCE
    assert abs(policy - upstream) < TOLERANCE, (policy, upstream)


def test_each_upstream_sets_the_timing_of_the_users_routed_to_it(
    loop_thread: LoopThread,
) -> None:
    """A policy refusal matches the upstream the user would have been sent to: a user of the
    fast upstream does not wait for the slow one, and a slow one's user is not answered fast."""
    with _upstream(loop_thread, UPSTREAM_DELAY) as (_, slow), \
            _upstream(loop_thread, 0.05) as (_, fast):
        upstreams = {"slow": {"host": "127.0.0.1", "port": slow}}
        routes = [{"match": "*@slow.example", "upstream": "slow"}]
        with _proxy(loop_thread, fast, upstreams=upstreams, routes=routes) as proxy:
            slow_upstream = refusal_time(proxy.port, "someone@slow.example", "x")
            fast_upstream = refusal_time(proxy.port, "someone@fast.example", "x")
            slow_policy = refusal_time(proxy.port, "guarded@slow.example")
            fast_policy = refusal_time(proxy.port, "guarded@fast.example")
            slow_upstream_again = refusal_time(proxy.port, "other@slow.example", "x")
            fast_upstream_again = refusal_time(proxy.port, "other@fast.example", "x")
    assert slow_upstream >= UPSTREAM_DELAY and fast_upstream < UPSTREAM_DELAY
    assert abs(slow_policy - slow_upstream_again) < TOLERANCE, (slow_policy, slow_upstream_again)
    assert abs(fast_policy - fast_upstream_again) < TOLERANCE, (fast_policy, fast_upstream_again)
    assert fast_policy < UPSTREAM_DELAY - 0.2  # about the 0.2 s floor


def test_successful_login_is_not_held_to_the_learned_delay(loop_thread: LoopThread) -> None:
    with _upstream(loop_thread, 0.3) as (_, port), _proxy(loop_thread, port) as proxy:
        refusal_time(proxy.port, "alice")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            replies = sock.makefile("rb")
            replies.readline()
            sock.sendall(b"USER alice\r\n")
            replies.readline()
            started = time.monotonic()
            sock.sendall(b"PASS right\r\n")
            assert replies.readline().startswith(b"+OK")
            assert time.monotonic() - started < 0.3 + TOLERANCE  # the upstream's time only
