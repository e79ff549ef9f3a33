"""The schema's shared building blocks: frozen models that refuse unknown keys, bounded ports
and durations, and Redis URLs checked when the policy loads."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from popproxy.policy.schema_base import Model, Port, Seconds, check_redis_url


class Sample(Model):
    port: Port = 110
    timeout: Seconds = 1.0


def test_models_are_frozen_and_refuse_unknown_keys() -> None:
    sample = Sample.model_validate({"port": 995})
    with pytest.raises(ValidationError):
        sample.port = 110  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        Sample.model_validate({"prot": 995})


@pytest.mark.parametrize(("port", "ok"), [(1, True), (65535, True), (0, False), (65536, False)])
def test_port_bounds(port: int, ok: bool) -> None:
    valid = True
    try:
        TypeAdapter(Port).validate_python(port)
    except ValidationError:
        valid = False
    assert valid is ok


@pytest.mark.parametrize(("seconds", "ok"), [(0.001, True), (86400, True), (0, False),
                                             (86401, False)])
def test_seconds_bounds(seconds: float, ok: bool) -> None:
    valid = True
    try:
        TypeAdapter(Seconds).validate_python(seconds)
    except ValidationError:
        valid = False
    assert valid is ok


def test_redis_urls() -> None:
    for url in ("redis://10.0.7.30:6379/0", "rediss://:pw@r.example:6380/1",
                "unix:///run/redis.sock", None):
        assert check_redis_url(url) == url
    with pytest.raises(ValueError, match="must be a Redis URL starting with redis://"):
        check_redis_url("http://10.0.7.30:6379")
