"""Lockouts and shared verdicts through Redis Sentinel (a real failover) and Redis Cluster.

Sentinel: a primary, a replica and three sentinels (tests/integration/redis_ha.py, quorum 2,
down-after 500 ms); two proxies A and B (``lockout.redis_sentinel``, scan taking lockout's,
``fail_mode`` open, and closed as a slow variant) in front of the real Dovecot.  Good and bad
logins run in a loop through both while the primary is SIGKILLed.  Proves: with fail_mode open
no login is refused during the failover (local counters meanwhile; the failed Redis calls are
counted in popproxy_redis_errors_total); with closed, logins are refused with [SYS/TEMP] only
from the kill until the sentinels name the new primary; in both, a pair blocked before the
kill is still blocked after it (the test waits for the replica with ``WAIT 1`` before the kill:
the product does not, see docs/scaling.md, "Failover"); failures after the failover are
counted on the promoted replica and block at both proxies; failures recorded under load more
than 0.5 s before the kill are on the replica (what is younger is the documented loss window:
the count lost is printed); a verdict stored before the kill
and one stored after it are served by the other proxy without a scan, with the sizes first
listed.

Cluster: three ``--cluster-enabled`` primaries; the same proxies with ``redis_cluster``: the
lockout script and both pipelines (the ``{lockout}`` slot) and the single-key verdicts work.
With a replica per primary (slow), the primary of the ``{lockout}`` shard is SIGKILLed under
load: Redis Cluster's own failover, with the same guarantees as Sentinel's (fail_mode open).
"""

from __future__ import annotations

import io
import ipaddress
import poplib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from popproxy.auditlog import AuditLog
from popproxy.policy.lockout import make_keys
from popproxy.policy.schema import Lockout
from popproxy.policy.schema_redis import RedisCluster
from popproxy.proxy.lockout_guard import load_secret
from popproxy.proxy.lockout_store import REDIS_PREFIX as LOCKOUT_PREFIX
from popproxy.proxy.observe import Observer
from popproxy.proxy.redis_client import REDIS_TIMEOUT, connect
from popproxy.proxy.verdict_cache import REDIS_PREFIX, RedisVerdicts
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration import redis_ha, redis_server
from tests.integration.dovecot import Dovecot
from tests.integration.pop3_clients import curl_sizes, listing, login
from tests.integration.redis_ha import Cluster, Node, SentinelSet
from tests.integration.redis_server import RedisUnavailable

pytestmark = pytest.mark.dovecot

LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later"
AUTH_FAILED = b"-ERR [AUTH] authentication failed"
STORE_DOWN = b"-ERR [SYS/TEMP] login temporarily unavailable, try again later"
# Three different wrong passwords: a client retrying one stale password counts once.
WRONG = ("Wrong-Guess-1", "Wrong-Guess-2", "Wrong-Guess-3")
PREFIX = b"popproxy:{lockout}:*"
LOAD_THREADS = 3
FAILOVER_TIMEOUT = 30.0
# Replication on loopback lags by milliseconds; a failure recorded this long before the kill
# must be on the replica (the loss window is what is younger: docs/scaling.md, "Failover").
REPLICATION_LAG_BOUND = 0.5
BEFORE_KILL = 2.0  # seconds of load through the healthy primary
LOOPBACK = ipaddress.ip_address("127.0.0.1")
# After the failover the load runs on this long: logins through the promoted primary.
AFTER_FAILOVER = 2.0


def _unavailable(exc: RedisUnavailable) -> None:
    if redis_server.in_ci():
        pytest.fail(f"Redis Sentinel/Cluster tests cannot run: {exc}", pytrace=False)
    pytest.skip(f"Redis Sentinel/Cluster tests skipped: {exc}")


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    try:
        ha = redis_ha.start_sentinel_set()
    except RedisUnavailable as exc:
        _unavailable(exc)
    try:
        yield ha
    finally:
        redis_ha.cleanup(ha.base, ha.nodes())


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    try:
        made = redis_ha.start_cluster()
    except RedisUnavailable as exc:
        _unavailable(exc)
    try:
        yield made
    finally:
        redis_ha.cleanup(made.base, made.nodes)


@pytest.fixture
def cluster_with_replicas() -> Iterator[Cluster]:
    try:
        made = redis_ha.start_cluster(replicas=1)
    except RedisUnavailable as exc:
        _unavailable(exc)
    try:
        yield made
    finally:
        redis_ha.cleanup(made.base, made.nodes)


@dataclass
class Proxy:
    port: int
    observer: Observer
    lockout: Lockout

    def pair_key(self, user: str) -> bytes:
        """The Redis name of ``user``'s pair counter from 127.0.0.1 (as the proxy makes it)."""
        keys = make_keys(load_secret(self.lockout, Path()), user, LOOPBACK, self.lockout)
        return (LOCKOUT_PREFIX + keys.pair).encode()

    def sample(self, name: str, **labels: str) -> float:
        value = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def redis_errors(self) -> float:
        return sum(self.sample("popproxy_redis_errors_total", operation=op)
                   for op in ("counts", "record_failure", "record_success"))

    def cache(self, result: str) -> float:
        return self.sample("popproxy_verdict_cache_total", result=result)

    def attempt(self, user: str, password: str) -> bytes:
        """USER/PASS with poplib: ``+OK...`` or the ``-ERR`` line."""
        client = poplib.POP3("127.0.0.1", self.port, timeout=30)
        try:
            client.user(user)
            reply = client.pass_(password)
        except poplib.error_proto as exc:
            reply = exc.args[0]
        client.quit()
        assert isinstance(reply, bytes)
        return reply

    def sizes(self, user: str, password: str) -> dict[int, int]:
        client = login(self.port, user, password)
        try:
            return listing(client)
        finally:
            client.quit()


def _proxies(stack: ExitStack, dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path,
             redis: dict[str, Any], fail_mode: str = "open") -> tuple[Proxy, Proxy]:
    secret = tmp_path / "lockout.key"
    secret.write_bytes(b"k" * 32 + b"\n")
    lockout = {"enabled": True, "window": 600, "pair": {"free": 1, "block_after": 3},
               # Every login here comes from 127.0.0.1: only the pair scope may block.
               "source": {"free": 100_000, "block_after": 100_000},
               "account": {"free": 100_000, "block_after": 100_000},
               "base_delay": 0.01, "max_delay": 0.05, "secret_file": str(secret),
               "fail_mode": fail_mode, **redis}
    made = []
    for name in ("a", "b"):
        observer = Observer(audit=AuditLog(io.StringIO()))
        config = make_config(dovecot.port, state_dir=str(tmp_path / name), lockout=lockout,
                             scan={"enabled": True, "workers": 1})
        assert config.scan.redis == config.lockout.redis  # verdicts through the same Redis
        proxy = stack.enter_context(running_proxy(config, loop_thread, observer))
        made.append(Proxy(proxy.port, observer, config.lockout))
    return made[0], made[1]


def _lost_before(failed: list[tuple[str, float]], killed: float, proxy: Proxy,
                 replica: Node) -> list[float]:
    """When the failures answered before the kill whose counter the replica lacks were
    answered (each failure was recorded in Redis before its reply was sent)."""
    client = replica.client()
    try:
        return [t for user, t in failed
                if t < killed and not client.exists(proxy.pair_key(user))]
    finally:
        client.close()


def _lockout_keys(node: Node) -> int:
    client = node.client()
    try:
        return sum(1 for _ in client.scan_iter(match=PREFIX, count=1000))
    finally:
        client.close()


def _span(times: list[float], origin: float) -> str:
    if not times:
        return "never"
    return f"+{min(times) - origin:.2f} s to +{max(times) - origin:.2f} s after the kill"


def _kind(reply: bytes) -> str:
    if reply.startswith(b"+OK"):
        return "ok"
    kinds = {AUTH_FAILED: "auth failed", STORE_DOWN: "store down", LOCKED: "locked"}
    return kinds.get(reply, repr(reply))


class Load:
    """Good (alice) and bad (a new user name each time) logins through A and B until stopped."""

    def __init__(self, proxies: tuple[Proxy, Proxy], dovecot: Dovecot) -> None:
        self._proxies = proxies
        self._good = ("alice", dovecot.password("alice"))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.slowest = 0.0
        self.refused_at: list[float] = []  # monotonic times of [SYS/TEMP] store-down replies
        self.failed: list[tuple[str, float]] = []  # (user, time answered) of auth failures
        self._serial = 0

    def _one(self, worker: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._serial += 1
                serial = self._serial
            proxy = self._proxies[serial % 2]
            good = serial % 3 != 0
            started = time.monotonic()
            user = f"nobody{worker}x{serial}"
            try:
                reply = proxy.attempt(*self._good) if good else proxy.attempt(user, "wrong")
                outcome = f"{'good' if good else 'bad'} {_kind(reply)!r}"
            except (OSError, poplib.error_proto) as exc:
                outcome = f"{'good' if good else 'bad'} error {exc!r}"
            with self._lock:
                self.outcomes[outcome] += 1
                if "store down" in outcome:
                    self.refused_at.append(time.monotonic())
                if outcome == "bad 'auth failed'":  # recorded (in Redis or locally) before it
                    self.failed.append((user, time.monotonic()))
                self.slowest = max(self.slowest, time.monotonic() - started)

    def run(self, pool: ThreadPoolExecutor) -> list[Any]:
        return [pool.submit(self._one, n) for n in range(LOAD_THREADS)]

    def stop(self) -> None:
        self._stop.set()


def _kill_primary_under_load(ha: SentinelSet) -> tuple[float, float]:
    """SIGKILL the primary while the load runs: (the time of the kill, the seconds until the
    sentinels name the replica primary)."""
    time.sleep(BEFORE_KILL)
    killed = time.monotonic()
    ha.primary.kill()
    redis_ha.wait(lambda: ha.master_port() == ha.replica.port, "the sentinels' failover",
                  FAILOVER_TIMEOUT)
    took = time.monotonic() - killed
    time.sleep(AFTER_FAILOVER)
    return killed, took


@pytest.mark.parametrize("fail_mode", ["open", pytest.param("closed", marks=pytest.mark.slow)])
def test_logins_and_verdicts_survive_a_sentinel_failover(
        sentinel_set: SentinelSet, dovecot: Dovecot, loop_thread: LoopThread,
        tmp_path: Path, fail_mode: str) -> None:
    ha = sentinel_set
    redis = {"redis_sentinel": {"sentinels": ha.sentinel_addresses, "service": "popproxy",
                                "password": redis_ha.DATA_PASSWORD,
                                "sentinel_password": redis_ha.SENTINEL_PASSWORD}}
    with ExitStack() as stack:
        a, b = _proxies(stack, dovecot, loop_thread, tmp_path, redis, fail_mode)
        # Before the kill: bob's pair blocked (counted at A, seen at B), the scan mailbox judged.
        assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        assert b.attempt("bob", dovecot.password("bob")) == LOCKED
        judged = a.sizes("scan", "scanpw")
        assert a.cache("miss") == len(judged) == 5
        primary = ha.primary.client()
        try:  # every write so far is on the replica (the product does not wait: the docs)
            assert primary.wait(1, 5000) == 1
        finally:
            primary.close()

        load = Load((a, b), dovecot)
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            workers = load.run(pool)
            try:
                killed, failover = _kill_primary_under_load(ha)
            finally:
                load.stop()
            for worker in workers:
                worker.result()
        outcomes = dict(load.outcomes)
        print(f"sentinel failover (fail_mode {fail_mode}): {failover:.2f} s; load {outcomes}; "
              f"slowest login {load.slowest:.2f} s; redis errors A {a.redis_errors():.0f} "
              f"B {b.redis_errors():.0f}; refused from {_span(load.refused_at, killed)}")
        # open: nothing refused, nothing broken, every bad login an auth failure; closed: the
        # same, except logins refused with [SYS/TEMP] while no primary answered.
        expected = {"good 'ok'", "bad 'auth failed'"}
        if fail_mode == "closed":
            expected |= {"good 'store down'", "bad 'store down'"}
            assert outcomes.get("good 'store down'", 0) > 0, outcomes
            # ... and only until the sentinels named the new primary (plus one call's deadline).
            assert max(load.refused_at) < killed + failover + 2 * REDIS_TIMEOUT
        assert all(t >= killed for t in load.refused_at)
        assert set(outcomes) <= expected, outcomes
        assert outcomes.get("good 'ok'", 0) > 0 and outcomes.get("bad 'auth failed'", 0) > 0
        assert a.redis_errors() + b.redis_errors() > 0  # the outage was seen, and counted

        # The loss window: failures recorded on the old primary shortly before the kill may
        # not have reached the replica (no WAIT in the product); older ones must have.
        lost = _lost_before(load.failed, killed, a, ha.replica)
        print(f"failures recorded before the kill: {sum(t < killed for _, t in load.failed)}, "
              f"lost with the primary: {len(lost)}"
              + (f" (answered {killed - min(lost):.3f} s or less before the kill)"
                 if lost else ""))
        assert all(killed - t < REPLICATION_LAG_BOUND for t in lost), lost
        assert any(killed - t > REPLICATION_LAG_BOUND for _, t in load.failed)  # checked some

        # After: bob's counter held; new failures count on the promoted replica, at both.
        assert a.attempt("bob", dovecot.password("bob")) == LOCKED
        before = _lockout_keys(ha.replica)
        assert [a.attempt("empty", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        assert _lockout_keys(ha.replica) == before + 2  # its pair and account counters
        assert b.attempt("empty", dovecot.password("empty")) == LOCKED

        # Verdicts: the one from before the kill and a new one, each judged once.
        assert curl_sizes(b.port) == judged
        assert b.cache("shared_hit") == 5 and b.cache("miss") == 0
        fresh = a.sizes("dave", dovecot.password("dave"))
        assert b.sizes("dave", dovecot.password("dave")) == fresh
        assert b.cache("shared_hit") == 5 + len(fresh) and b.cache("miss") == 0


def test_lockouts_and_verdicts_on_a_redis_cluster(
        cluster: Cluster, dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    # Two of the three nodes: it learns the third.
    redis = {"redis_cluster": {"nodes": cluster.addresses[:2],
                               "password": redis_ha.DATA_PASSWORD}}
    with ExitStack() as stack:
        a, b = _proxies(stack, dovecot, loop_thread, tmp_path, redis)
        # The failure script (3 keys) and the counts pipeline, then success's MULTI pipeline.
        assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        assert b.attempt("bob", dovecot.password("bob")) == LOCKED
        assert a.attempt("alice", dovecot.password("alice")).startswith(b"+OK")
        assert a.redis_errors() == b.redis_errors() == 0
        holders = [n for n in cluster.nodes if _lockout_keys(n)]
        assert len(holders) == 1  # one slot: {lockout}

        judged = a.sizes("scan", "scanpw")
        assert b.sizes("scan", "scanpw") == judged
        assert a.cache("miss") == b.cache("shared_hit") == 5 and b.cache("miss") == 0
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
                 if cluster.role(n) == "master" and _lockout_keys(n)), None)


@pytest.mark.slow  # about 19 s on a quiet box (six nodes, cluster-node-timeout 2 s)
def test_lockouts_and_verdicts_survive_a_cluster_failover(
        cluster_with_replicas: Cluster, dovecot: Dovecot, loop_thread: LoopThread,
        tmp_path: Path) -> None:
    """The shard holding the {lockout} slot loses its primary mid-load; its replica takes
    over (Redis Cluster's own failover, cluster-node-timeout): as with Sentinel, no login is
    refused (fail_mode open), the block earned before holds, new failures count there."""
    cluster = cluster_with_replicas
    redis = {"redis_cluster": {"nodes": cluster.addresses, "password": redis_ha.DATA_PASSWORD}}
    with ExitStack() as stack:
        a, b = _proxies(stack, dovecot, loop_thread, tmp_path, redis)
        assert [a.attempt("bob", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        judged = a.sizes("scan", "scanpw")
        holder = next(n for n in cluster.primaries() if _lockout_keys(n))
        client = holder.client()
        try:
            assert client.wait(1, 5000) == 1
        finally:
            client.close()

        load = Load((a, b), dovecot)
        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            workers = load.run(pool)
            try:
                time.sleep(BEFORE_KILL)
                killed = time.monotonic()
                holder.kill()
                redis_ha.wait(lambda: _promoted(cluster, holder) is not None,
                              "the cluster's failover", FAILOVER_TIMEOUT)
                failover = time.monotonic() - killed
                time.sleep(AFTER_FAILOVER)
            finally:
                load.stop()
            for worker in workers:
                worker.result()
        outcomes = dict(load.outcomes)
        print(f"cluster failover: {failover:.2f} s; load {outcomes}; slowest login "
              f"{load.slowest:.2f} s; redis errors A {a.redis_errors():.0f} "
              f"B {b.redis_errors():.0f}")
        assert set(outcomes) <= {"good 'ok'", "bad 'auth failed'"}, outcomes
        assert outcomes.get("good 'ok'", 0) > 0 and outcomes.get("bad 'auth failed'", 0) > 0

        promoted = _promoted(cluster, holder)
        assert promoted is not None
        assert b.attempt("bob", dovecot.password("bob")) == LOCKED
        before = _lockout_keys(promoted)
        assert [a.attempt("empty", pw) for pw in WRONG] == [AUTH_FAILED] * 3
        assert _lockout_keys(promoted) == before + 2
        assert b.attempt("empty", dovecot.password("empty")) == LOCKED
        assert curl_sizes(b.port) == judged
        assert b.cache("shared_hit") == 5 and b.cache("miss") == 0
