"""The policy's lockout section (``policy/schema_lockout.py``); the decisions it drives are in
tests/policy/test_lockout.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from popproxy.policy.schema_lockout import Lockout, LockoutLimit


def test_lockout_limits_are_ordered() -> None:
    with pytest.raises(ValidationError, match="block_after must be >= free"):
        LockoutLimit.model_validate({"free": 5, "block_after": 3})
    assert Lockout().pair == LockoutLimit(free=3, block_after=10)


def test_lockout_shares_its_redis_keys_with_scan() -> None:
    # redis_url, redis_sentinel and redis_cluster come from SharedRedis, as for scan.
    assert Lockout.model_validate({"redis_url": "redis://10.0.0.5:6379/0"}).redis is not None
    with pytest.raises(ValidationError, match="must be a Redis URL"):
        Lockout.model_validate({"redis_url": "http://10.0.0.5"})
