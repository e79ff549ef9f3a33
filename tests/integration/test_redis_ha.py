"""Lockouts and shared verdicts through Redis Sentinel, across a real failover.

A primary, a replica and three sentinels (tests/integration/redis_ha.py: quorum 2, down-after
500 ms, passwords on the data nodes and the sentinels); two proxies A and B
(``lockout.redis_sentinel``, scan taking lockout's, ``fail_mode`` open, and closed as a slow
variant) in front of the real Dovecot.  Good and bad logins run in a loop through both while
the primary is SIGKILLed (tests/integration/ha_load.py).  Proves: with fail_mode open no login
is refused during the failover (local counters meanwhile; the failed Redis calls are counted
in popproxy_redis_errors_total); with closed, logins are refused with [SYS/TEMP] only from the
kill until the sentinels name the new primary; in both, a pair blocked before the kill is still
blocked after it (the test waits for the replica with ``WAIT 1`` before the load: the product
does not, see docs/scaling.md, "Failover"); failures recorded under load more than 0.5 s
before the kill are on the replica (what is younger is the documented loss window: the count
lost is printed); failures after the failover are counted on the promoted replica and block
at both proxies; a verdict stored before the kill and one stored after it are served by the
other proxy without a scan, with the sizes first listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from popproxy.proxy.redis_client import REDIS_TIMEOUT
from tests.helpers import LoopThread
from tests.integration import redis_ha
from tests.integration.dovecot import Dovecot
from tests.integration.ha_load import (
    AUTH_FAILED,
    LOCKED,
    MESSAGES,
    WRONG,
    Load,
    Proxy,
    check_after_failover,
    kill_under_load,
    lost_before,
    proxies,
    span,
    unavailable,
)
from tests.integration.redis_ha import SentinelSet
from tests.integration.redis_server import RedisUnavailable

pytestmark = pytest.mark.dovecot

# Replication on loopback lags by milliseconds; a failure recorded this long before the kill
# must be on the replica (the loss window is what is younger: docs/scaling.md, "Failover").
REPLICATION_LAG_BOUND = 0.5


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    try:
        ha = redis_ha.start_sentinel_set()
    except RedisUnavailable as exc:
        unavailable(exc)
    try:
        yield ha
    finally:
        redis_ha.cleanup(ha.base, ha.nodes())


def _before_the_kill(ha: SentinelSet, a: Proxy, b: Proxy, dovecot: Dovecot) -> dict[int, int]:
    """bob's pair blocked (counted at A, seen at B), the scan mailbox judged at A, all of it
    on the replica; the sizes listed."""
    assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
    assert b.attempt("bob", dovecot.password("bob")) == LOCKED
    judged = a.sizes("scan", "scanpw")
    assert a.cache("miss") == len(judged) == MESSAGES
    primary = ha.primary.client()
    try:  # every write so far is on the replica (the product does not wait: the docs)
        assert primary.wait(1, 5000) == 1
    finally:
        primary.close()
    return judged


def _check_the_load(load: Load, killed: float, failover: float, fail_mode: str) -> None:
    """open: nothing refused, nothing broken, every bad login an auth failure; closed: the
    same, except logins refused with [SYS/TEMP] while no primary answered."""
    outcomes = dict(load.outcomes)
    expected = {"good 'ok'", "bad 'auth failed'"}
    if fail_mode == "closed":
        expected |= {"good 'store down'", "bad 'store down'"}
        assert outcomes.get("good 'store down'", 0) > 0, outcomes
        # ... and only until the sentinels named the new primary (plus one call's deadline).
        assert max(load.refused_at) < killed + failover + 2 * REDIS_TIMEOUT
    assert all(t >= killed for t in load.refused_at)
    assert set(outcomes) <= expected, outcomes
    assert outcomes.get("good 'ok'", 0) > 0 and outcomes.get("bad 'auth failed'", 0) > 0


@pytest.mark.parametrize("fail_mode", ["open", pytest.param("closed", marks=pytest.mark.slow)])
def test_logins_and_verdicts_survive_a_sentinel_failover(
        sentinel_set: SentinelSet, dovecot: Dovecot, loop_thread: LoopThread,
        tmp_path: Path, fail_mode: str) -> None:
    ha = sentinel_set
    redis = {"redis_sentinel": {"sentinels": ha.sentinel_addresses, "service": "popproxy",
                                "password": redis_ha.DATA_PASSWORD,
                                "sentinel_password": redis_ha.SENTINEL_PASSWORD}}
    with ExitStack() as stack:
        a, b = proxies(stack, dovecot, loop_thread, tmp_path, redis, fail_mode)
        judged = _before_the_kill(ha, a, b, dovecot)
        load = Load((a, b), dovecot)
        killed, failover = kill_under_load(load, ha.primary.kill,
                                           lambda: ha.master_port() == ha.replica.port)
        print(f"sentinel failover (fail_mode {fail_mode}): {failover:.2f} s; load "
              f"{dict(load.outcomes)}; slowest login {load.slowest:.2f} s; redis errors A "
              f"{a.redis_errors():.0f} B {b.redis_errors():.0f}; refused from "
              f"{span(load.refused_at, killed)}")
        _check_the_load(load, killed, failover, fail_mode)
        assert a.redis_errors() + b.redis_errors() > 0  # the outage was seen, and counted

        # The loss window: failures recorded on the old primary shortly before the kill may
        # not have reached the replica (no WAIT in the product); older ones must have.
        lost = lost_before(load.failed, killed, a, ha.replica)
        print(f"failures recorded before the kill: {sum(t < killed for _, t in load.failed)}, "
              f"lost with the primary: {len(lost)}"
              + (f" (answered {killed - min(lost):.3f} s or less before the kill)"
                 if lost else ""))
        assert all(killed - t < REPLICATION_LAG_BOUND for t in lost), lost
        assert any(killed - t > REPLICATION_LAG_BOUND for _, t in load.failed)  # checked some

        check_after_failover(a, b, dovecot, ha.replica, judged)
        # A verdict judged after the failover is shared too.
        fresh = a.sizes("dave", dovecot.password("dave"))
        assert b.sizes("dave", dovecot.password("dave")) == fresh
        assert b.cache("shared_hit") == MESSAGES + len(fresh) and b.cache("miss") == 0
