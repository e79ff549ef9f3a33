"""The policy's ``lockout`` section: failed-login throttling (the model: policy/lockout.py).

Counters are shared by several instances through the keys inherited from
:class:`~popproxy.policy.schema_redis.SharedRedis` (docs/lockouts.md, docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from popproxy.policy.schema_base import Model
from popproxy.policy.schema_redis import SharedRedis


class LockoutLimit(Model):
    """Failures in the window before delays start (``free``) and before blocking."""

    # Failures in the window that cost nothing (a stale password retried counts once); from
    # then on each attempt first waits base_delay * 2**(failures - free), at most max_delay.
    free: Annotated[int, Field(ge=0)]
    # Failures in the window from which attempts get -ERR [SYS/TEMP] (RFC 3206) without the
    # upstream being asked, until old failures leave the window.
    block_after: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> LockoutLimit:
        if self.block_after < self.free:
            raise ValueError("block_after must be >= free")
        return self


SECRET_FILE = "lockout.key"  # lockout.secret_file's default, in state_dir


class Lockout(SharedRedis):
    """Failed-login throttling (see popproxy/policy/lockout.py for the model); shared by
    several instances through ``redis_url``, ``redis_sentinel`` or ``redis_cluster``."""

    # false: no throttling, no counters, no key (ipv4_prefix/ipv6_prefix still count sources
    # for limits.max_sessions_per_ip).
    enabled: bool = True
    # Seconds of the sliding window the counters count failures in: free and block_after are
    # per window, and a block lifts as failures age out of it.
    window: Annotated[float, Field(ge=60, le=7 * 86400)] = 3600.0
    # One account from one network: a user with a stale password gets slowed, then blocked.
    pair: LockoutLimit = LockoutLimit(free=3, block_after=10)
    # One network guessing many accounts.
    source: LockoutLimit = LockoutLimit(free=10, block_after=50)
    # One account guessed from many networks (not applied where the user logged in lately).
    account: LockoutLimit = LockoutLimit(free=10, block_after=30)
    # Seconds the first delayed attempt waits, doubling per further failure (0: blocks only).
    # Only that session sleeps, and the wait counts against limits.login_timeout.
    base_delay: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Longest such wait in seconds; keep it well under limits.login_timeout.
    max_delay: Annotated[float, Field(ge=0, le=600)] = 30.0
    # Seconds a network stays trusted for an account after a good login from it: there the
    # account limit does not apply, so guessing elsewhere cannot lock the user out.  0: never.
    trusted_ttl: Annotated[float, Field(ge=0, le=365 * 86400)] = 30 * 86400.0
    # Leading bits of an IPv4 client address that form one source for the source and pair
    # counters and limits.max_sessions_per_ip (32: each address; 24 for a shared /24).
    ipv4_prefix: Annotated[int, Field(ge=8, le=32)] = 32
    # The same for IPv6: 64, as one host may use any address of its /64; 56 or 48 count a
    # whole customer site (RFC 6177).
    ipv6_prefix: Annotated[int, Field(ge=16, le=128)] = 64
    # HMAC key for counter names and password tags; generated in state_dir if not given.
    secret_file: Path | None = None
    # Redis unreachable: "open" keeps throttling with local counters, "closed" refuses logins.
    fail_mode: Literal["open", "closed"] = "open"
