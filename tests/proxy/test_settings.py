"""Per-listener session settings: fixed values read from the policy, shared parts fresh."""

from __future__ import annotations

import dataclasses

import pytest

from popproxy.proxy.observe import Observer
from popproxy.proxy.settings import SessionSettings
from popproxy.proxy.upstream_socket import open_channel
from tests.helpers import make_config


def _settings() -> SessionSettings:
    policy = make_config(110, limits={"max_login_failures": 2},
                         tls={"handshake_timeout": 7})
    return SessionSettings(policy, policy.listeners[0], None, {}, Observer())


def test_limits_and_handshake_timeout_come_from_the_policy() -> None:
    settings = _settings()
    assert settings.limits is settings.policy.limits
    assert settings.limits.max_login_failures == 2
    assert settings.handshake_timeout == 7


def test_defaults_connect_for_real_and_share_nothing_between_instances() -> None:
    first, second = _settings(), _settings()
    assert first.upstream_connect is open_channel
    assert (first.lockout, first.scan, first.capture) == (None, None, None)
    assert first.upstream_caps is not second.upstream_caps
    assert first.failure_timing is not second.failure_timing


def test_settings_are_fixed_for_the_session() -> None:
    # A policy reload affects only sessions that start afterwards.
    with pytest.raises(dataclasses.FrozenInstanceError):
        _settings().policy = make_config(111)  # type: ignore[misc]
