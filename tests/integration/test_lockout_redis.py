"""Lockouts shared through a real Redis by two proxy instances, and Redis going away.

A session-wide ``redis-server`` (tests/integration/redis_server.py) on a free loopback port;
each test starts two ProxyServers (A and B) with the same ``redis_url`` and ``secret_file``
on the shared event loop, each with its own state_dir, metrics and audit log.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popproxy.auditlog import AuditLog
from popproxy.policy.lockout import TRUSTED_REFRESH_FRACTION, assess, make_keys, password_tag
from popproxy.policy.schema_lockout import Lockout, LockoutLimit
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.lockout_store import REDIS_PREFIX, SEEN_MAX_AGE, RedisStore
from popproxy.proxy.observe import Observer
from popproxy.proxy.redis_client import connect_url
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for
from tests.integration.redis_server import RedisServer

LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"
STORE_DOWN = b"-ERR [SYS/TEMP] login temporarily unavailable, try again later\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"

PASSWORDS = {"alice": "Alice-Pass-Word", "bob": "Bob-Pass-Word", "demo": "demo"}
WRONG = ["Wrong-Guess-One", "Wrong-Guess-Two", "Wrong-Guess-Three"]
SECRET = b"0123456789abcdef" * 4  # the shared secret_file's content
WINDOW = 60
TRUSTED_TTL = 3600
# One hash tag for all lockout keys: the failure script may touch them together on a Cluster.
KEY_RE = re.compile(rb"popproxy:\{lockout\}:[aspt]:[0-9a-f]{32}")
# A counter member: a password tag, prefixed by the other scope's key for source/account.
MEMBER_RE = re.compile(rb"(?:[as]:[0-9a-f]{32})?[0-9a-f]{32}")


@pytest.fixture
def demo(loop_thread: LoopThread) -> Iterator[DemoUpstream]:
    users = {name.encode(): Mailbox(pw.encode()) for name, pw in PASSWORDS.items()}
    with running_demo(loop_thread, DemoUpstream(users=users)) as server:
        yield server


@dataclass
class Instance:
    """One proxy instance with its own observer (metrics, audit log)."""

    port: int
    observer: Observer
    audit_stream: io.StringIO

    def records(self, event: str, **match: object) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]
        return [r for r in found
                if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def sample(self, name: str, **labels: str) -> float:
        value = self.observer.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def redis_errors(self) -> float:
        return sum(self.sample("popproxy_redis_errors_total", operation=op)
                   for op in ("counts", "record_failure", "record_success"))

    def attempt(self, user: str, password: str) -> bytes:
        """One USER/PASS login on a fresh connection; the PASS reply.

        The QUIT reply is awaited too: the session records a success in the store after its
        +OK, and handles QUIT only once that is done, so nothing is left in flight.
        """
        with RawPOP3(self.port) as c:
            assert c.command(f"USER {user}") == b"+OK send PASS\r\n"
            reply = c.command(f"PASS {password}")
            assert c.command("QUIT").startswith(b"+OK")
            return reply


@pytest.fixture
def instances(rds: RedisServer, demo: DemoUpstream, loop_thread: LoopThread, tmp_path: Path,
              request: pytest.FixtureRequest) -> Iterator[tuple[Instance, Instance]]:
    """Proxies A and B sharing Redis and the HMAC key (``fail_mode`` from the test's param)."""
    fail_mode = getattr(request, "param", "open")
    secret = tmp_path / "lockout.key"
    secret.write_bytes(SECRET + b"\n")
    lockout = {"enabled": True, "window": WINDOW, "pair": {"free": 1, "block_after": 3},
               "base_delay": 0.01, "max_delay": 0.05, "trusted_ttl": TRUSTED_TTL,
               "secret_file": str(secret), "redis_url": rds.url, "fail_mode": fail_mode}
    with ExitStack() as stack:
        pair = []
        for name in ("a", "b"):
            stream = io.StringIO()
            observer = Observer(audit=AuditLog(stream))
            config = make_config(demo.port, state_dir=str(tmp_path / name), lockout=lockout)
            proxy = stack.enter_context(running_proxy(config, loop_thread, observer))
            pair.append(Instance(proxy.port, observer, stream))
        yield pair[0], pair[1]


def _fail_three_times(at: Instance, user: str) -> None:
    assert [at.attempt(user, pw) for pw in WRONG] == [AUTH_FAILED] * 3


def _bytes(value: object) -> bytes:
    assert isinstance(value, bytes), value  # the inspection client does not decode
    return value


def _stored(rds: RedisServer) -> dict[bytes, tuple[bytes, list[bytes], int]]:
    """Every key -> (type, members or value, TTL in seconds)."""
    client = rds.client()
    try:
        out: dict[bytes, tuple[bytes, list[bytes], int]] = {}
        for key in client.scan_iter(match=b"*", count=1000):
            kind = _bytes(client.type(key))
            zset = kind == b"zset"
            raw = client.zrange(key, 0, -1) if zset else [client.get(key) or b""]
            out[_bytes(key)] = (kind, [_bytes(m) for m in raw], int(client.ttl(key)))
        return out
    finally:
        client.close()


# --------------------------------------------------------------------------- shared counting
def test_failures_at_one_instance_block_the_pair_at_the_other(
        instances: tuple[Instance, Instance], demo: DemoUpstream) -> None:
    a, b = instances
    _fail_three_times(a, "alice")
    seen = len(demo.commands_seen)
    assert b.attempt("alice", PASSWORDS["alice"]) == LOCKED  # B never saw a failure itself
    assert a.attempt("alice", PASSWORDS["alice"]) == LOCKED
    assert demo.commands_seen[seen:] == []  # blocked before the upstream
    assert b.attempt("bob", PASSWORDS["bob"]).startswith(b"+OK")  # only the pair is blocked
    assert [r["scope"] for r in b.records("login", result="locked")] == ["pair"]
    assert b.sample("popproxy_lockout_blocks_total", scope="pair") == 1
    assert a.redis_errors() == b.redis_errors() == 0


def test_redis_holds_only_keyed_hashes_with_ttls(instances: tuple[Instance, Instance],
                                                 rds: RedisServer) -> None:
    a, b = instances
    _fail_three_times(a, "alice")
    b.attempt("alice", WRONG[0])  # blocked: not counted again
    for _ in range(3):
        a.attempt("bob", WRONG[0])  # the same stale password counts once
    assert b.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")  # leaves a trusted marker

    stored = _stored(rds)
    # alice and bob: a pair and an account counter each; one source; demo: a trusted marker;
    # all named by HMAC under the shared secret_file (so A and B agree on them).
    settings, here = Lockout(), ipaddress.ip_address("127.0.0.1")
    alice, bob, demo = (make_keys(SECRET, u, here, settings) for u in ("alice", "bob", "demo"))
    expected = [alice.pair, alice.account, bob.pair, bob.account, alice.source, demo.trusted]
    assert set(stored) == {f"popproxy:{{lockout}}:{k}".encode() for k in expected}
    secrets = [s.encode() for s in (*PASSWORDS, *PASSWORDS.values(), *WRONG,
                                    "127.0.0.1", "127.0.0.0")]
    for key, (kind, items, ttl) in stored.items():
        assert KEY_RE.fullmatch(key), key
        for item in (key, *items):
            assert not [s for s in secrets if s.lower() in item.lower()], (key, item)
        if kind == b"zset":
            assert all(MEMBER_RE.fullmatch(m) for m in items), items
            assert 0 < ttl <= WINDOW + 1
        else:
            assert (kind, items) == (b"string", [b"1"])
            assert TRUSTED_TTL - 10 < ttl <= TRUSTED_TTL
    zcards = sorted(len(items) for kind, items, _ in stored.values() if kind == b"zset")
    assert zcards == [1, 1, 3, 3, 4]  # bob's one tag twice, alice's three twice, source four
    # Members are keyed password tags (the same stale password collapses), never passwords.
    alice_pair = stored[f"popproxy:{{lockout}}:{alice.pair}".encode()][1]
    assert set(alice_pair) == {password_tag(SECRET, "alice", pw.encode()).encode() for pw in WRONG}


# --------------------------------------------------------------------------- Redis down
@pytest.mark.parametrize("instances", ["open"], indirect=True)
def test_fail_open_keeps_local_counters_and_recovers(instances: tuple[Instance, Instance],
                                                     rds: RedisServer,
                                                     demo: DemoUpstream) -> None:
    a, b = instances
    assert a.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")
    rds.kill()

    # Logins keep working ...
    assert a.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")
    # ... and guessing is still throttled, by A's own counters.
    _fail_three_times(a, "alice")
    assert a.attempt("alice", PASSWORDS["alice"]) == LOCKED
    # B has not seen those failures: without Redis nothing is shared.
    assert b.attempt("alice", PASSWORDS["alice"]).startswith(b"+OK")

    assert a.sample("popproxy_redis_errors_total", operation="counts") >= 5
    assert a.sample("popproxy_redis_errors_total", operation="record_failure") == 3
    errors = a.records("lockout_store_error")
    assert {(r["operation"], r["fail_mode"]) for r in errors} >= {
        ("counts", "open"), ("record_failure", "open"), ("record_success", "open")}
    assert all(r["session"] is None and "user" not in r for r in errors)

    # Redis comes back (empty) on the same port: shared counting resumes, no proxy restart.
    # Both instances made calls during the outage, so their pooled connections are gone: the
    # very next call reconnects.
    rds.start()
    before = a.redis_errors(), b.redis_errors()
    assert a.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")
    _fail_three_times(a, "bob")
    assert b.attempt("bob", PASSWORDS["bob"]) == LOCKED
    assert (a.redis_errors(), b.redis_errors()) == before
    assert any(key.split(b":")[2] == b"p" for key in _stored(rds))


@pytest.mark.parametrize("instances", ["closed"], indirect=True)
def test_fail_closed_refuses_logins_until_redis_is_back(instances: tuple[Instance, Instance],
                                                        rds: RedisServer,
                                                        demo: DemoUpstream) -> None:
    a, b = instances
    rds.kill()
    seen = len(demo.commands_seen)
    with RawPOP3(a.port) as c:
        assert c.command("USER demo") == b"+OK send PASS\r\n"
        assert c.command(f"PASS {PASSWORDS['demo']}") == STORE_DOWN
        assert c.command("QUIT") == b"+OK bye\r\n"
    assert b.attempt("alice", PASSWORDS["alice"]) == STORE_DOWN
    assert demo.commands_seen[seen:] == []  # nothing reached the upstream
    assert a.sample("popproxy_logins_total", result="store_unavailable") == 1
    assert a.sample("popproxy_redis_errors_total", operation="counts") == 1
    assert [(r["operation"], r["fail_mode"]) for r in a.records("lockout_store_error")] == [
        ("counts", "closed")]
    assert [r["user"] for r in a.records("login", result="store_unavailable")] == ["demo"]

    rds.start()  # same port, empty; the proxies are not restarted
    before = a.redis_errors(), b.redis_errors()
    assert a.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")
    assert b.attempt("demo", PASSWORDS["demo"]).startswith(b"+OK")
    _fail_three_times(b, "bob")
    assert a.attempt("bob", PASSWORDS["bob"]) == LOCKED  # shared again
    assert (a.redis_errors(), b.redis_errors()) == before


@pytest.mark.parametrize("instances", ["closed"], indirect=True)
def test_fail_closed_sasl_refusal_leaves_a_usable_session(instances: tuple[Instance, Instance],
                                                          rds: RedisServer) -> None:
    a, _ = instances
    rds.kill()
    with RawPOP3(a.port) as c:
        plain = base64.b64encode(f"\0demo\0{PASSWORDS['demo']}".encode()).decode()
        assert c.command(f"AUTH PLAIN {plain}") == STORE_DOWN
        assert c.command("QUIT") == b"+OK bye\r\n"



def _client_ids(rds: RedisServer) -> set[int]:
    """Connections to Redis other than the one asking."""
    client = rds.client()
    try:
        me = client.client_id()
        return {int(c["id"]) for c in client.client_list()} - {me}
    finally:
        client.close()


def test_stopping_the_proxy_closes_its_redis_connections(rds: RedisServer, demo: DemoUpstream,
                                                         loop_thread: LoopThread,
                                                         tmp_path: Path) -> None:
    config = make_config(demo.port, state_dir=str(tmp_path),
                         lockout={"enabled": True, "redis_url": rds.url})
    before = _client_ids(rds)
    with running_proxy(config, loop_thread) as proxy:
        with RawPOP3(proxy.port) as c:
            c.login("demo", PASSWORDS["demo"])
        opened = _client_ids(rds) - before
        assert opened  # the proxy's own connection(s)
    wait_for(lambda: not opened & _client_ids(rds), timeout=1.0,
             what="the stopped proxy's Redis connections to close")


def test_reloading_lockout_settings_closes_the_old_redis_client(
        rds: RedisServer, demo: DemoUpstream, loop_thread: LoopThread, tmp_path: Path) -> None:
    lockout = {"enabled": True, "redis_url": rds.url}
    config = make_config(demo.port, state_dir=str(tmp_path), lockout=lockout)
    before = _client_ids(rds)
    with running_proxy(config, loop_thread) as proxy:
        with RawPOP3(proxy.port) as c:
            c.login("demo", PASSWORDS["demo"])
        opened = _client_ids(rds) - before
        assert opened
        new = make_config(demo.port, state_dir=str(tmp_path), lockout={**lockout, "window": 120})
        # Held here so that garbage collection cannot close its connections behind our back:
        # only an explicit close counts (a session started before the reload may hold it too).
        old_guard = proxy.server.lockout

        async def reload() -> bool:
            return proxy.server.reload_policy(new)

        assert loop_thread.call(reload())
        with RawPOP3(proxy.port) as c:  # the new guard works
            c.login("demo", PASSWORDS["demo"])
        wait_for(lambda: not opened & _client_ids(rds), timeout=1.0,
                 what="the replaced guard's Redis connections to close")
        assert old_guard is not proxy.server.lockout


# ------------------------------------------------------- a steady user's login: one round trip
# Regression (review): every good login rewrote the "known source" marker (MULTI, DEL, SET,
# EXEC: a second round trip after the check's read).  Now it writes only what the host file's
# store writes: a pair failure to clear, or a marker past TRUSTED_REFRESH_FRACTION of its TTL.
WRITE_COMMANDS = ("set", "del", "exec", "multi")  # a success writes with these


def _writes(rds: RedisServer) -> int:
    client = rds.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in WRITE_COMMANDS)


def _marker_ttl(rds: RedisServer, key: str) -> float:
    client = rds.client()
    try:
        return int(client.pttl(REDIS_PREFIX + key)) / 1000
    finally:
        client.close()


def _age_marker(rds: RedisServer, key: str, used: float) -> None:
    """As if ``used`` of the marker's TTL had passed since the last write."""
    client = rds.client()
    try:
        client.pexpire(REDIS_PREFIX + key, int(TRUSTED_TTL * (1 - used) * 1000))
    finally:
        client.close()


def test_a_steady_users_good_login_writes_only_when_it_changes_something(
        rds: RedisServer) -> None:
    settings = Lockout(window=WINDOW, trusted_ttl=TRUSTED_TTL)
    keys = make_keys(SECRET, "alice", ipaddress.ip_address("192.0.2.7"), settings)
    now = time.time()

    async def main() -> None:
        store = RedisStore(connect_url(rds.url))

        async def login(at: float, failed_first: bool = False) -> None:
            assert assess(await store.counts(keys, at, WINDOW), settings).action == "allow"
            if failed_first:  # a wrong password first, then the right one
                await store.record_failure(keys, "a-tag", at, WINDOW)
            await store.record_success(keys, at, TRUSTED_TTL)

        try:
            await login(now)  # the first: the marker is made
            assert _marker_ttl(rds, keys.trusted) > TRUSTED_TTL - 5
            before = _writes(rds)
            for i in range(5):
                await login(now + i)
            assert _writes(rds) == before  # the check's read was the only round trip
            _age_marker(rds, keys.trusted, used=TRUSTED_REFRESH_FRACTION * 0.9)
            await login(now + 5)
            assert _writes(rds) == before  # not yet: the trust lasts >= 90 % of its TTL
            _age_marker(rds, keys.trusted, used=TRUSTED_REFRESH_FRACTION * 1.1)
            await login(now + 6)
            assert _writes(rds) > before  # renewed
            assert _marker_ttl(rds, keys.trusted) > TRUSTED_TTL - 5
            await login(now + 7, failed_first=True)  # the failure is cleared at the success
            assert (await store.counts(keys, now + 8, WINDOW)).pair == 0
            await store.record_failure(keys, "b-tag", now + 8, WINDOW)  # a failure, then a check
            await login(now + 9)  # that saw it: the success clears it
            assert (await store.counts(keys, now + 10, WINDOW)).pair == 0
            before = _writes(rds)
            await store.counts(keys, now + 11, WINDOW)  # a read too old to rely on: written
            await store.record_success(keys, now + 12 + SEEN_MAX_AGE, TRUSTED_TTL)
            assert _writes(rds) > before
        finally:
            await store.close()

    asyncio.run(main())


def test_a_reload_that_shortens_trusted_ttl_shortens_an_active_users_marker(
        rds: RedisServer) -> None:
    """Regression (review): the marker set under trusted_ttl 30 days counted as fresh at the
    logins after a reload to 1 hour (more than 90 % of the TTL left): trusted for 30 days."""
    old_ttl, new_ttl = 30 * 86400, 3600
    settings = Lockout(window=WINDOW, trusted_ttl=old_ttl)
    keys = make_keys(SECRET, "alice", ipaddress.ip_address("192.0.2.7"), settings)
    now = time.time()

    async def main() -> None:
        store = RedisStore(connect_url(rds.url))
        try:
            await store.counts(keys, now, WINDOW)
            await store.record_success(keys, now, old_ttl)
            await store.counts(keys, now + 1, WINDOW)  # the reload, then the user's next login
            await store.record_success(keys, now + 1, new_ttl)
        finally:
            await store.close()

    asyncio.run(main())
    assert new_ttl - 5 < _marker_ttl(rds, keys.trusted) <= new_ttl


def test_a_success_clears_a_pair_failure_outside_the_window_too(rds: RedisServer) -> None:
    """Review: the check saw only failures inside the window (ZCOUNT), so a success left one
    older but not yet pruned, which the host file's store clears (any row of the pair)."""
    settings = Lockout(window=WINDOW, trusted_ttl=TRUSTED_TTL)
    keys = make_keys(SECRET, "alice", ipaddress.ip_address("192.0.2.7"), settings)
    now = time.time()

    async def main() -> None:
        store = RedisStore(connect_url(rds.url))
        try:
            await store.counts(keys, now, WINDOW)
            await store.record_success(keys, now, TRUSTED_TTL)  # a fresh marker
            await store.record_failure(keys, "old-tag", now - WINDOW - 1, WINDOW)
            assert (await store.counts(keys, now + 1, WINDOW)).pair == 0  # outside the window
            await store.record_success(keys, now + 1, TRUSTED_TTL)
        finally:
            await store.close()

    asyncio.run(main())
    client = rds.client()
    try:
        assert not client.exists(REDIS_PREFIX + keys.pair)
    finally:
        client.close()


def test_guessing_from_elsewhere_still_spares_the_users_network(rds: RedisServer) -> None:
    """Skipped renewals do not weaken the rule: the marker holds, so the account's block does
    not apply where the user logs in."""
    settings = Lockout(window=WINDOW, trusted_ttl=TRUSTED_TTL,
                       account=LockoutLimit(free=1, block_after=3))
    home = make_keys(SECRET, "alice", ipaddress.ip_address("192.0.2.7"), settings)
    now = time.time()

    async def main() -> None:
        store = RedisStore(connect_url(rds.url))
        try:
            for i in range(3):  # the user's steady logins, renewals skipped after the first
                await store.counts(home, now + i, WINDOW)
                await store.record_success(home, now + i, TRUSTED_TTL)
            for n in range(5):  # an attacker guessing alice from five other networks
                away = make_keys(SECRET, "alice", ipaddress.ip_address(f"198.51.100.{n}"),
                                 settings)
                await store.record_failure(away, f"guess-{n}", now + 3, WINDOW)
            blocked = await store.counts(away, now + 4, WINDOW)
            assert assess(blocked, settings).scope == "account"
            at_home = await store.counts(home, now + 4, WINDOW)
            assert at_home.trusted and at_home.account == 5
            assert assess(at_home, settings).action == "allow"
        finally:
            await store.close()

    asyncio.run(main())
