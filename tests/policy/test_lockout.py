"""Lockouts with an injected clock: guessing gets expensive, the real user keeps access."""

from __future__ import annotations

import asyncio
import ipaddress

from popproxy.policy.lockout import (
    SOURCE_NETWORKS,
    TRUSTED_REFRESH_FRACTION,
    TRUSTED_TTL_SLACK,
    _source_network,
    assess,
    make_keys,
    marker_is_fresh,
    password_tag,
    source_network,
)
from popproxy.policy.schema_lockout import Lockout
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.lockout_store import MemoryStore
from popproxy.proxy.observe import Observer
from tests.support.fake_time import FakeTime

SECRET = b"k" * 32
HOUR = 3600.0


def _guard(settings: Lockout | None = None) -> tuple[LockoutGuard, FakeTime]:
    fake = FakeTime()
    guard = LockoutGuard(settings or Lockout(), MemoryStore(), SECRET, Observer(),
                         clock=fake.clock, sleep=fake.sleep)
    return guard, fake


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)



async def _guess_for(guard: LockoutGuard, fake: FakeTime, user: str, source: str,
                     seconds: float) -> int:
    """An attacker trying new passwords as fast as allowed; returns guesses that got through."""
    end = fake.now + seconds
    tried = 0
    while fake.now < end:
        result = await guard.check(user, ip(source))
        if result.action == "block":
            fake.now += 60  # a blocked attacker retries every minute
            continue
        tried += 1
        await guard.failed(user, ip(source), f"guess-{tried}".encode())
        fake.now += 0.1  # the round trip of one attempt
    return tried


def test_brute_force_from_one_source_is_cut_to_ten_per_hour() -> None:
    guard, fake = _guard()
    first_hour = asyncio.run(_guess_for(guard, fake, "alice", "198.51.100.7", HOUR))
    assert first_hour == Lockout().pair.block_after == 10
    assert fake.slept[:3] == [1.0, 2.0, 4.0]  # backoff after the 3 free attempts
    next_hours = asyncio.run(_guess_for(guard, fake, "alice", "198.51.100.7", 5 * HOUR))
    assert next_hours <= 5 * 10  # the window slides: at most 10 per hour, ever


def test_real_user_keeps_access_during_distributed_guessing() -> None:
    """Named regression: 1,000 sources lock the account for strangers, not for its owner."""
    guard, fake = _guard()
    owner = "203.0.113.5"

    async def scenario() -> tuple[int, str, str]:
        await guard.succeeded("alice", ip(owner))  # the owner logged in last week
        fake.now += 7 * 86400
        guesses = 0
        for n in range(1000):
            source = f"10.{n // 250}.{n % 250}.1"
            for attempt in range(3):
                result = await guard.check("alice", ip(source))
                if result.action != "block":
                    guesses += 1
                    await guard.failed("alice", ip(source), f"{n}-{attempt}".encode())
                fake.now += 0.5
        stranger = await guard.check("alice", ip("192.0.2.99"))
        owner_result = await guard.check("alice", ip(owner))
        return guesses, stranger.action, owner_result.action

    guesses, stranger, owner_action = asyncio.run(scenario())
    assert guesses <= Lockout().account.block_after + 1
    assert stranger == "block"
    assert owner_action == "allow"


def test_repeated_identical_wrong_password_counts_once() -> None:
    guard, fake = _guard()

    async def scenario() -> str:
        for _ in range(50):  # a phone retrying a stale password all day
            await guard.failed("bob", ip("192.0.2.1"), b"old-password")
            fake.now += 60
        return (await guard.check("bob", ip("192.0.2.1"))).action

    assert asyncio.run(scenario()) == "allow"


def test_ipv6_sources_share_a_counter_per_64() -> None:
    settings = Lockout()
    same = make_keys(SECRET, "u", ip("2001:db8:1:2::1"), settings)
    neighbour = make_keys(SECRET, "u", ip("2001:db8:1:2:ffff::9"), settings)
    other = make_keys(SECRET, "u", ip("2001:db8:1:3::1"), settings)
    assert same.source == neighbour.source and same.pair == neighbour.pair
    assert same.source != other.source


def test_ipv4_prefix_is_configurable() -> None:
    settings = Lockout(ipv4_prefix=24)
    assert (make_keys(SECRET, "u", ip("192.0.2.1"), settings).source
            == make_keys(SECRET, "u", ip("192.0.2.200"), settings).source)


def test_success_resets_the_pair() -> None:
    guard, _fake = _guard()

    async def scenario() -> tuple[str, str]:
        for n in range(5):
            await guard.failed("carol", ip("192.0.2.1"), str(n).encode())
        before = (await guard.check("carol", ip("192.0.2.1"))).action
        await guard.succeeded("carol", ip("192.0.2.1"))
        after = (await guard.check("carol", ip("192.0.2.1"))).action
        return before, after

    assert asyncio.run(scenario()) == ("delay", "allow")


def test_source_guessing_many_accounts_is_blocked() -> None:
    guard, _fake = _guard()

    async def scenario() -> str:
        for n in range(Lockout().source.block_after):
            await guard.failed(f"user{n}", ip("198.51.100.1"), b"Summer2026!")
        return (await guard.check("someone-else", ip("198.51.100.1"))).action

    assert asyncio.run(scenario()) == "block"


def test_keys_and_tags_reveal_no_names_or_passwords() -> None:
    keys = make_keys(SECRET, "alice@example.test", ip("192.0.2.1"), Lockout())
    tag = password_tag(SECRET, "alice@example.test", b"hunter2")
    text = repr(keys) + tag
    for secret in ("alice", "example", "192.0.2", "hunter2"):
        assert secret not in text


def test_assess_takes_the_strictest_scope() -> None:
    from popproxy.policy.lockout import Counts

    settings = Lockout()
    assert assess(Counts(0, 0, 0, False), settings).action == "allow"
    assert assess(Counts(0, 0, 4, False), settings).delay == 2.0
    assert assess(Counts(30, 0, 0, True), settings).action == "allow"  # trusted source
    blocked = assess(Counts(30, 0, 4, False), settings)
    assert (blocked.action, blocked.scope) == ("block", "account")
    assert assess(Counts(0, 0, 40, False), settings).delay == 0.0  # block, not a delay


def test_source_networks_are_remembered_per_prefix_setting() -> None:
    """Asked at every connection (the per-source cap): remembered, bounded, and a reload with
    another prefix is not answered from the memo of the old one."""
    address = ipaddress.ip_address("2001:db8:1:2::7")
    assert source_network(address, Lockout()) == "2001:db8:1:2::/64"
    assert source_network(address, Lockout(ipv6_prefix=48)) == "2001:db8:1::/48"
    assert source_network(address, Lockout()) == "2001:db8:1:2::/64"
    assert _source_network.cache_info().maxsize == SOURCE_NETWORKS


def test_a_marker_is_fresh_only_between_its_refresh_point_and_the_current_ttl() -> None:
    """Regression (review): a marker with more time left than the current trusted_ttl (a
    reload shortened it) counted as fresh, so an active user kept the old TTL's trust."""
    ttl = 3600.0
    refresh_at = ttl * (1 - TRUSTED_REFRESH_FRACTION)
    assert marker_is_fresh(ttl, ttl) and marker_is_fresh(refresh_at, ttl)
    assert marker_is_fresh(ttl + TRUSTED_TTL_SLACK, ttl)  # rounding: same TTL
    assert not marker_is_fresh(refresh_at - 1, ttl)  # aged: renewed
    assert not marker_is_fresh(ttl + TRUSTED_TTL_SLACK + 1, ttl)  # 30 days left, TTL 1 hour
    assert not marker_is_fresh(30 * 86400, ttl)
    assert not marker_is_fresh(None, ttl)
    assert marker_is_fresh(None, 0) and marker_is_fresh(30 * 86400, 0)  # trust off: no write
