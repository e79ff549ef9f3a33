"""Failed-login lockouts: pure decisions over counters, with keys that reveal nothing.

Three sliding-window counters are kept per attempt (all keyed by HMAC, never by the clear
username or address):

* **pair** (account + source network): a client retrying one account from one place;
* **source** (network: IPv4 /32, IPv6 /64 by default): one place guessing many accounts;
* **account**: many places guessing one account.  It does **not** apply to a source network
  where the account logged in successfully within ``trusted_ttl`` ("trusted"), so guessing from
  elsewhere cannot lock the real user out from their usual address.

Members of a counter include a keyed hash of the password tried, so a client repeating the
same stale password counts once.  Below ``free`` failures nothing happens; then each attempt
waits ``base_delay * 2**(n - free)`` seconds (capped at ``max_delay``); at ``block_after`` the
scope is blocked until old failures leave the window.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass

from popproxy.policy.decisions import IPAddress, unmapped
from popproxy.policy.schema_lockout import Lockout, LockoutLimit

KEY_HEX_CHARS = 32  # 128 bits of HMAC-SHA256: no collisions in practice, short Redis keys
# A good login marks its (account, network) trusted for trusted_ttl.  Rewritten at every login,
# the marker cost a write per login (a SQLite write transaction, a Redis round trip); rewritten
# only once it has used this fraction of its TTL, the trust still lasts at least
# (1 - fraction) * trusted_ttl (27 of the default 30 days) after the last login, and a steady
# user's logins write nothing (issue 18).
TRUSTED_REFRESH_FRACTION = 0.1
# A marker is never left as it is with more time to live than trusted_ttl (a reload shortened
# it: 30 days -> 1 hour must not keep an old marker's trust for 30 days).  This much over it
# still counts as written under the same TTL (s): Redis's EX is whole seconds and the host
# file's expiry a float written by another worker's clock reading; a marker past it is
# rewritten (one write), so the slack only has to exceed rounding, not be tight.
TRUSTED_TTL_SLACK = 1.0


@dataclass(frozen=True, slots=True)
class LockoutKeys:
    """Opaque counter names for one (account, source) attempt."""

    account: str
    source: str
    pair: str
    trusted: str  # marks "this account logged in from this network recently"


@dataclass(frozen=True, slots=True)
class Counts:
    """Failures in the window per scope, and whether the source is trusted for the account."""

    account: int
    source: int
    pair: int
    trusted: bool


@dataclass(frozen=True, slots=True)
class Assessment:
    """``action`` is allow, delay (wait ``delay`` seconds first) or block; ``scope`` says why."""

    action: str
    delay: float = 0.0
    scope: str | None = None


ALLOW = Assessment("allow")


def _mac(secret: bytes, *parts: str) -> str:
    message = "\x00".join(parts).encode("utf-8", "surrogateescape")
    return hmac.digest(secret, message, "sha256").hex()[:KEY_HEX_CHARS]


def source_network(address: IPAddress, settings: Lockout) -> str:
    """The network a source is counted under (IPv6 clients get a /64 by default).

    One host or customer network gets a whole IPv6 /64 (RFC 6177) and can use any address in
    it; counting exact addresses would give it unlimited tries (and, for the per-source session
    cap, unlimited sessions).  An IPv4-mapped address counts as its IPv4 address.
    """
    return _source_network(address, settings.ipv4_prefix, settings.ipv6_prefix)


# Sources counted lately: asked at every connection (the per-source session cap) and at every
# login with lockouts on; ~10 Python calls each, for the same few addresses again and again.
SOURCE_NETWORKS = 4096


@functools.lru_cache(maxsize=SOURCE_NETWORKS)
def _source_network(address: IPAddress, ipv4_prefix: int, ipv6_prefix: int) -> str:
    address = unmapped(address)
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    bits = address.max_prefixlen
    masked = int(address) >> (bits - prefix) << (bits - prefix)  # cheaper than ip_network()
    return f"{type(address)(masked)}/{prefix}"


def make_keys(secret: bytes, username: str, address: IPAddress, settings: Lockout) -> LockoutKeys:
    """Counter keys; usernames are case-folded so ``Alice`` and ``alice`` share a counter."""
    account = username.casefold()
    network = source_network(address, settings)
    return LockoutKeys(
        account="a:" + _mac(secret, "account", account),
        source="s:" + _mac(secret, "source", network),
        pair="p:" + _mac(secret, "pair", account, network),
        trusted="t:" + _mac(secret, "trusted", account, network),
    )


def marker_is_fresh(remaining: float | None, trusted_ttl: float) -> bool:
    """Whether a good login may leave a trusted marker with ``remaining`` seconds to live
    (None: there is none) as it is: TRUSTED_REFRESH_FRACTION of ``trusted_ttl`` not yet used,
    and no longer to live than ``trusted_ttl`` (else rewritten: down to the current TTL)."""
    if trusted_ttl <= 0:
        return True  # trust is off: no marker to write
    return remaining is not None and (
        trusted_ttl * (1 - TRUSTED_REFRESH_FRACTION) <= remaining
        <= trusted_ttl + TRUSTED_TTL_SLACK)


def password_tag(secret: bytes, username: str, password: bytes) -> str:
    """A keyed hash of the password tried (never stored or logged in clear)."""
    return _mac(secret, "password", username.casefold(), password.hex())


def members(keys: LockoutKeys, tag: str) -> dict[str, str]:
    """The member each counter records for one failure (identical retries collapse)."""
    return {keys.pair: tag, keys.source: keys.account + tag, keys.account: keys.source + tag}


def _assess_scope(count: int, limit: LockoutLimit, settings: Lockout, scope: str) -> Assessment:
    if count >= limit.block_after:
        return Assessment("block", 0.0, scope)
    if count >= limit.free:
        delay = min(settings.max_delay, settings.base_delay * 2 ** (count - limit.free))
        return Assessment("delay", delay, scope)
    return ALLOW


def assess(counts: Counts, settings: Lockout) -> Assessment:
    """The strictest outcome over the scopes that apply (block beats the longest delay)."""
    scopes = [("pair", counts.pair, settings.pair), ("source", counts.source, settings.source)]
    if not counts.trusted:
        scopes.append(("account", counts.account, settings.account))
    results = [_assess_scope(count, limit, settings, name) for name, count, limit in scopes]
    blocked = [r for r in results if r.action == "block"]
    if blocked:
        return blocked[0]
    delays = [r for r in results if r.action == "delay"]
    return max(delays, key=lambda r: r.delay) if delays else ALLOW
