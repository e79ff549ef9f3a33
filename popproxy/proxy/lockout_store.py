"""Where lockout counters live: in memory (one instance) or in Redis (several instances).

Each counter is a sorted set of members scored by the time of their last failure; counting is
"members scored inside the window".  Redis updates run as one Lua script per failure
(atomic across instances) and every key carries a TTL.  Keys are namespaced and are HMACs:
no username or address is ever stored in clear.

Every key shares the hash tag ``{lockout}``: the failure script touches three keys (pair,
source, account) and a success updates two, and Redis Cluster runs a script or a MULTI only on
keys of one slot.  No narrower tag is correct: a source key is shared by every account guessed
from that network and an account key by every network guessing it, so the keys one call touches
link all counters together.  The cost is that all lockout state lives on one Cluster shard
(docs/scaling.md sizes it).

A good login costs one round trip, the ``counts`` read before it: ``RedisStore`` keeps what
that read saw (the pair's failures, the trusted marker's TTL) until the login's outcome, and
a success writes only if it has a failure to clear or a marker past
``TRUSTED_REFRESH_FRACTION`` of its TTL to renew (the rule of the host file's store too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from popproxy.policy.lockout import Counts, LockoutKeys, marker_is_fresh, members
from popproxy.proxy.redis_client import REDIS_MAX_CONNECTIONS, REDIS_TIMEOUT
from popproxy.proxy.redis_client import connect_url as connect_redis

if TYPE_CHECKING:
    from popproxy.proxy.redis_client import SharedClient


log = logging.getLogger("popproxy.lockout")

T = TypeVar("T")

REDIS_PREFIX = "popproxy:{lockout}:"
# What ``counts`` read is trusted at the login's success for this long (s): past it, the
# success writes as if nothing had been read (a login is over within limits.login_timeout,
# 60 s by default; a stale read must not hide a failure recorded since by another instance).
SEEN_MAX_AGE = 60.0
# Reads kept for logins in flight, the oldest dropped first: a check whose login never ends
# in a success or failure (a block, a client gone) leaves one.  In-flight logins per process
# are far fewer; a dropped one only costs its success the write it would have skipped.
SEEN_MAX = 4096
# Clients and their timeouts are made in redis_client; these names stay importable from here
# (``connect_redis(url)`` knows ``redis_url`` only: new code calls ``redis_client.connect`` with
# the section's ``redis`` target, which also covers Sentinel and Cluster).
__all__ = ["REDIS_MAX_CONNECTIONS", "REDIS_TIMEOUT", "FailoverStore", "LockoutStore",
           "MemoryStore", "RedisStore", "StoreUnavailable", "connect_redis"]


class LockoutStore(Protocol):
    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts: ...

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None: ...

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None: ...


class MemoryStore:
    """Counters in this process; old entries are pruned as they are touched."""

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, float]] = {}
        self._trusted: dict[str, float] = {}  # key -> expiry time

    def _count(self, key: str, since: float) -> int:
        entries = self._sets.get(key)
        if not entries:
            return 0
        for member in [m for m, t in entries.items() if t < since]:
            del entries[member]
        if not entries:
            del self._sets[key]
        return len(entries)

    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts:
        since = now - window
        trusted = self._trusted.get(keys.trusted, 0.0) > now
        return Counts(self._count(keys.account, since), self._count(keys.source, since),
                      self._count(keys.pair, since), trusted)

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None:
        for key, member in members(keys, tag).items():
            self._sets.setdefault(key, {})[member] = now
            self._count(key, now - window)

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        self._sets.pop(keys.pair, None)
        if trusted_ttl > 0:
            self._trusted[keys.trusted] = now + trusted_ttl

    def size(self) -> int:
        return len(self._sets) + len(self._trusted)


# KEYS: pair, source, account.  ARGV: now, since, ttl, member-for-pair, -source, -account.
_RECORD_FAILURE = """
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], ARGV[1], ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"""


class RedisStore:
    """Counters shared through Redis (a client from ``redis_client.connect``: one server,
    Sentinel or Cluster; the keys share one Cluster slot, see the module docstring)."""

    def __init__(self, client: SharedClient) -> None:
        self._redis = client
        self._record = self._redis.register_script(_RECORD_FAILURE)
        # By trusted key: (when, the marker's seconds left or None, pair failures seen) as
        # this process's last ``counts`` of that (account, network) read them.
        self._seen: dict[str, tuple[float, float | None, bool]] = {}

    @staticmethod
    def _k(key: str) -> str:
        return REDIS_PREFIX + key

    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts:
        since = now - window
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in (keys.account, keys.source, keys.pair):
                pipe.zcount(self._k(key), since, "+inf")
            # Any failure of the pair, in the window or not (not yet pruned): a success clears
            # it, as the host file's store does (a reload that widens the window would count
            # it again).  Same round trip.
            pipe.zcard(self._k(keys.pair))
            pipe.pttl(self._k(keys.trusted))  # as cheap as EXISTS, and says when to renew it
            account, source, pair, pair_held, ttl_ms = await pipe.execute()
        # PTTL: -2 no such key, -1 a key without expiry (not ours: renewed at the next login).
        remaining = int(ttl_ms) / 1000 if int(ttl_ms) >= 0 else None
        self._remember(keys.trusted, (now, remaining, int(pair_held) > 0))
        return Counts(int(account), int(source), int(pair), int(ttl_ms) != -2)

    def _remember(self, trusted: str, seen: tuple[float, float | None, bool]) -> None:
        self._seen.pop(trusted, None)  # re-inserted last: the oldest read goes first
        if len(self._seen) >= SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        self._seen[trusted] = seen

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None:
        self._seen.pop(keys.trusted, None)  # a success of the same pair now has one to clear
        m = members(keys, tag)
        await self._record(
            keys=[self._k(keys.pair), self._k(keys.source), self._k(keys.account)],
            args=[now, now - window, int(window) + 1, m[keys.pair], m[keys.source],
                  m[keys.account]],
        )

    def _success_changes(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> bool:
        """Whether a success must write, judged by what this login's ``counts`` read: a
        failure of the pair to clear, or a marker missing or past its refresh point.  Nothing
        read (another process checked, too long ago, dropped): write, as before."""
        seen = self._seen.pop(keys.trusted, None)
        if seen is None or not 0 <= now - seen[0] <= SEEN_MAX_AGE:
            return True
        read_at, remaining, pair_failed = seen
        left = None if remaining is None else remaining - (now - read_at)
        return pair_failed or not marker_is_fresh(left, trusted_ttl)

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        if not self._success_changes(keys, now, trusted_ttl):
            return  # a steady user's login: no round trip
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._k(keys.pair))
            if trusted_ttl > 0:
                pipe.set(self._k(keys.trusted), b"1", ex=max(1, int(trusted_ttl)))
            await pipe.execute()

    async def close(self) -> None:
        await self._redis.aclose()


class StoreUnavailable(Exception):
    """The shared store failed and the policy says fail closed."""


class FailoverStore:
    """Redis first; on a Redis error fail open (local counters) or closed, per policy.

    Every failed call is counted (``on_error``) and retried against Redis on the next login,
    so the proxy returns to shared counters as soon as Redis is back.
    """

    def __init__(self, primary: LockoutStore, fail_open: bool,
                 on_error: Callable[[str, BaseException], None]) -> None:
        self._primary = primary
        self._local = MemoryStore()
        self._fail_open = fail_open
        self._on_error = on_error

    async def _call(self, operation: str, primary: Callable[[], Awaitable[T]],
                    local: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):
                return await primary()
        except Exception as exc:  # any client/network error: the store is unavailable
            self._on_error(operation, exc)
            if not self._fail_open:
                raise StoreUnavailable(operation) from None
            return await local()

    async def counts(self, keys: LockoutKeys, now: float, window: float) -> Counts:
        return await self._call("counts", lambda: self._primary.counts(keys, now, window),
                                lambda: self._local.counts(keys, now, window))

    async def record_failure(self, keys: LockoutKeys, tag: str, now: float,
                             window: float) -> None:
        await self._call("record_failure",
                         lambda: self._primary.record_failure(keys, tag, now, window),
                         lambda: self._local.record_failure(keys, tag, now, window))

    async def close(self) -> None:
        close = getattr(self._primary, "close", None)
        if close is not None:
            await close()

    async def record_success(self, keys: LockoutKeys, now: float, trusted_ttl: float) -> None:
        await self._call("record_success",

                         lambda: self._primary.record_success(keys, now, trusted_ttl),
                         lambda: self._local.record_success(keys, now, trusted_ttl))
