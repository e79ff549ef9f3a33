"""Two proxies in front of Dovecot sharing a Redis deployment, and a login load to run
through them while a Redis primary dies (tests/integration/test_redis_ha.py and
test_redis_cluster.py).

``Load`` runs good (alice) and bad (a new user name each time) logins through both proxies from
LOAD_THREADS threads; ``kill_under_load`` kills a primary BEFORE_KILL seconds into it and keeps
it running AFTER_FAILOVER seconds past the failover; ``check_after_failover`` holds what every
failover test requires afterwards.
"""

from __future__ import annotations

import io
import ipaddress
import poplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from popproxy.auditlog import AuditLog
from popproxy.policy.lockout import make_keys
from popproxy.policy.schema_lockout import Lockout
from popproxy.proxy.lockout_guard import load_secret
from popproxy.proxy.lockout_store import REDIS_PREFIX as LOCKOUT_PREFIX
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration import redis_server
from tests.integration.dovecot import Dovecot
from tests.integration.pop3_clients import curl_sizes, listing, login
from tests.integration.redis_ha import Node
from tests.integration.redis_server import RedisUnavailable

LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later"
AUTH_FAILED = b"-ERR [AUTH] authentication failed"
STORE_DOWN = b"-ERR [SYS/TEMP] login temporarily unavailable, try again later"
# Three different wrong passwords: a client retrying one stale password counts once.
WRONG = ("Wrong-Guess-1", "Wrong-Guess-2", "Wrong-Guess-3")
PREFIX = b"popproxy:{lockout}:*"
LOAD_THREADS = 3
FAILOVER_TIMEOUT = 30.0
BEFORE_KILL = 2.0  # seconds of load through the healthy primary
# After the failover the load runs on this long: logins through the promoted primary.
AFTER_FAILOVER = 2.0
LOOPBACK = ipaddress.ip_address("127.0.0.1")
MESSAGES = 5  # in Dovecot's "scan" mailbox (tests/integration/mailboxes.py)


def unavailable(exc: RedisUnavailable) -> NoReturn:
    if redis_server.in_ci():
        pytest.fail(f"Redis Sentinel/Cluster tests cannot run: {exc}", pytrace=False)
    pytest.skip(f"Redis Sentinel/Cluster tests skipped: {exc}")


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


def proxies(stack: ExitStack, dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path,
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


def lockout_keys(node: Node) -> int:
    client = node.client()
    try:
        return sum(1 for _ in client.scan_iter(match=PREFIX, count=1000))
    finally:
        client.close()


def lost_before(failed: list[tuple[str, float]], killed: float, proxy: Proxy,
                 replica: Node) -> list[float]:
    """When the failures answered before the kill whose counter the replica lacks were
    answered (each failure was recorded in Redis before its reply was sent)."""
    client = replica.client()
    try:
        return [t for user, t in failed
                if t < killed and not client.exists(proxy.pair_key(user))]
    finally:
        client.close()


def span(times: list[float], origin: float) -> str:
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


def kill_under_load(load: Load, kill: Callable[[], None],
                    recovered: Callable[[], bool]) -> tuple[float, float]:
    """Run ``load``; ``kill`` a primary into it and wait until ``recovered``: (the time of the
    kill, the seconds it took)."""
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        workers = load.run(pool)
        try:
            time.sleep(BEFORE_KILL)
            killed = time.monotonic()
            kill()
            wait_for(recovered, "the failover", FAILOVER_TIMEOUT)
            took = time.monotonic() - killed
            time.sleep(AFTER_FAILOVER)
        finally:
            load.stop()
        for worker in workers:
            worker.result()
    return killed, took


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def check_after_failover(a: Proxy, b: Proxy, dovecot: Dovecot, promoted: Node,
                         judged: dict[int, int]) -> None:
    """bob (blocked before the kill) is still blocked; new failures are counted on the promoted
    node and block at the other proxy; the verdicts judged before are served by B unscanned."""
    assert a.attempt("bob", dovecot.password("bob")) == LOCKED
    before = lockout_keys(promoted)
    assert [a.attempt("empty", pw) for pw in WRONG] == [AUTH_FAILED] * 3
    assert lockout_keys(promoted) == before + 2  # its pair and account counters
    assert b.attempt("empty", dovecot.password("empty")) == LOCKED
    assert curl_sizes(b.port) == judged
    assert b.cache("shared_hit") == MESSAGES and b.cache("miss") == 0
