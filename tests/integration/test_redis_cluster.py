"""Lockouts and shared verdicts on a real Redis Cluster (tests/integration/redis_ha.py).

Three ``--cluster-enabled`` primaries with a password; two proxies with ``redis_cluster`` in
front of the real Dovecot: the lockout script and both pipelines (all on the ``{lockout}``
slot) and the single-key verdicts work as they are, and forgetting verdicts (one DEL of keys
in many slots) is split by slot by redis-py.  With a replica per primary (slow), the primary
of the ``{lockout}`` shard is SIGKILLed under login load (tests/integration/ha_load.py): Redis
Cluster's own failover, with the same guarantees as Sentinel's (fail_mode open): nothing
refused, the block earned before holds, new failures count on the promoted replica, verdicts
stay shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from redis.crc import key_slot

from popproxy.policy.schema_redis import RedisCluster
from popproxy.proxy.redis_client import connect
from popproxy.proxy.verdict_cache import REDIS_PREFIX, RedisVerdicts
from tests.helpers import LoopThread
from tests.integration import redis_ha
from tests.integration.dovecot import Dovecot
from tests.integration.ha_load import (
    AUTH_FAILED,
    LOCKED,
    MESSAGES,
    WRONG,
    Load,
    check_after_failover,
    kill_under_load,
    lockout_keys,
    proxies,
    unavailable,
)
from tests.integration.redis_ha import Cluster, Node
from tests.integration.redis_server import RedisUnavailable

pytestmark = pytest.mark.dovecot


def _cluster(replicas: int) -> Iterator[Cluster]:
    try:
        made = redis_ha.start_cluster(replicas=replicas)
    except RedisUnavailable as exc:
        unavailable(exc)
    try:
        yield made
    finally:
        redis_ha.cleanup(made.base, made.nodes)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield from _cluster(0)


@pytest.fixture
def cluster_with_replicas() -> Iterator[Cluster]:
    yield from _cluster(1)


# What a good login would write with (the success's MULTI pipeline), on any node.
WRITE_COMMANDS = ("set", "del", "multi", "exec")


def _writes(nodes: list[Node]) -> int:
    total = 0
    for node in nodes:
        client = node.client()
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        total += sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                     for name in WRITE_COMMANDS)
    return total


def test_lockouts_and_verdicts_on_a_redis_cluster(
        cluster: Cluster, dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    # Two of the three nodes: it learns the third.
    redis = {"redis_cluster": {"nodes": cluster.addresses[:2],
                               "password": redis_ha.DATA_PASSWORD}}
    with ExitStack() as stack:
        a, b = proxies(stack, dovecot, loop_thread, tmp_path, redis)
        # The failure script (3 keys) and the counts pipeline, then success's MULTI pipeline.
        assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        assert b.attempt("bob", dovecot.password("bob")) == LOCKED
        assert a.attempt("alice", dovecot.password("alice")).startswith(b"+OK")
        # Again: the check's PTTL says the marker is fresh, so the success writes nothing.
        before = _writes(cluster.nodes)
        assert a.attempt("alice", dovecot.password("alice")).startswith(b"+OK")
        assert _writes(cluster.nodes) == before
        assert a.redis_errors() == b.redis_errors() == 0
        holders = [n for n in cluster.nodes if lockout_keys(n)]
        assert len(holders) == 1  # one slot: {lockout}

        judged = a.sizes("scan", "scanpw")
        assert b.sizes("scan", "scanpw") == judged
        assert a.cache("miss") == b.cache("shared_hit") == MESSAGES and b.cache("miss") == 0
        assert a.cache("shared_error") == b.cache("shared_error") == 0


def test_forgetting_verdicts_spread_over_cluster_slots(cluster: Cluster,
                                                       loop_thread: LoopThread) -> None:
    """``RedisVerdicts.delete`` sends one DEL for many keys: redis-py's Cluster client splits
    it by slot (a plain DEL of keys in several slots would be a CROSSSLOT error)."""
    keys = [f"k{n}" for n in range(20)]

    async def run() -> tuple[int, int]:
        target = RedisCluster(nodes=(cluster.addresses[0],), password=redis_ha.DATA_PASSWORD)
        verdicts = RedisVerdicts(connect(target), 60)
        raw = connect(target)
        try:
            for key in keys:
                await raw.set(REDIS_PREFIX + key, b"{}")
            await verdicts.delete(keys[:15])
            return len({key_slot((REDIS_PREFIX + key).encode()) for key in keys}), sum(
                [await raw.exists(REDIS_PREFIX + key) for key in keys])
        finally:
            await verdicts.close()
            await raw.aclose()

    slots, left = loop_thread.call(run())
    assert slots > 1 and left == 5


def _promoted(cluster: Cluster, dead: Node) -> Node | None:
    """The former replica of ``dead`` once it is primary, with the cluster whole again."""
    survivors = [n for n in cluster.nodes if n is not dead]
    if not all(redis_ha.cluster_ok(n) for n in survivors):
        return None
    return next((n for n in survivors
                 if cluster.role(n) == "master" and lockout_keys(n)), None)


@pytest.mark.slow  # about 19 s on a quiet box (six nodes, cluster-node-timeout 2 s)
def test_lockouts_and_verdicts_survive_a_cluster_failover(
        cluster_with_replicas: Cluster, dovecot: Dovecot, loop_thread: LoopThread,
        tmp_path: Path) -> None:
    cluster = cluster_with_replicas
    redis = {"redis_cluster": {"nodes": cluster.addresses, "password": redis_ha.DATA_PASSWORD}}
    with ExitStack() as stack:
        a, b = proxies(stack, dovecot, loop_thread, tmp_path, redis)
        assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        judged = a.sizes("scan", "scanpw")
        holder = next(n for n in cluster.primaries() if lockout_keys(n))
        client = holder.client()
        try:
            assert client.wait(1, 5000) == 1
        finally:
            client.close()

        load = Load((a, b), dovecot)
        _, failover = kill_under_load(load, holder.kill,
                                      lambda: _promoted(cluster, holder) is not None)
        outcomes = dict(load.outcomes)
        print(f"cluster failover: {failover:.2f} s; load {outcomes}; slowest login "
              f"{load.slowest:.2f} s; redis errors A {a.redis_errors():.0f} "
              f"B {b.redis_errors():.0f}")
        assert set(outcomes) <= {"good 'ok'", "bad 'auth failed'"}, outcomes
        assert outcomes.get("good 'ok'", 0) > 0 and outcomes.get("bad 'auth failed'", 0) > 0

        promoted = _promoted(cluster, holder)
        assert promoted is not None
        check_after_failover(a, b, dovecot, promoted, judged)
