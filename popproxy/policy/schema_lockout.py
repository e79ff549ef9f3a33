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

    free: Annotated[int, Field(ge=0)]
    block_after: Annotated[int, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> LockoutLimit:
        if self.block_after < self.free:
            raise ValueError("block_after must be >= free")
        return self


class Lockout(SharedRedis):
    """Failed-login throttling (see popproxy/policy/lockout.py for the model); shared by
    several instances through ``redis_url``, ``redis_sentinel`` or ``redis_cluster``."""

    enabled: bool = True
    window: Annotated[float, Field(ge=60, le=7 * 86400)] = 3600.0
    # One account from one network: a user with a stale password gets slowed, then blocked.
    pair: LockoutLimit = LockoutLimit(free=3, block_after=10)
    # One network guessing many accounts.
    source: LockoutLimit = LockoutLimit(free=10, block_after=50)
    # One account guessed from many networks (not applied where the user logged in lately).
    account: LockoutLimit = LockoutLimit(free=10, block_after=30)
    base_delay: Annotated[float, Field(ge=0, le=60)] = 1.0
    max_delay: Annotated[float, Field(ge=0, le=600)] = 30.0
    trusted_ttl: Annotated[float, Field(ge=0, le=365 * 86400)] = 30 * 86400.0
    ipv4_prefix: Annotated[int, Field(ge=8, le=32)] = 32
    ipv6_prefix: Annotated[int, Field(ge=16, le=128)] = 64
    # HMAC key for counter names and password tags; generated in state_dir if not given.
    secret_file: Path | None = None
    # Redis unreachable: "open" keeps throttling with local counters, "closed" refuses logins.
    fail_mode: Literal["open", "closed"] = "open"
