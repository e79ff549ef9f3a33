"""The policy schema (``policy/schema.py``): frozen models, unknown keys refused, limits with
their reasons, and the rules across entries that ``semantic_problems`` reports.

``tests/policy/test_loader.py`` covers reading files (FILE:LINE errors, merging); here the
models are validated from plain data.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import ValidationError

from popproxy.policy.schema import (
    LISTEN_BACKLOG,
    Limits,
    Listener,
    Policy,
    UserRule,
    semantic_problems,
)
from popproxy.policy.schema_scan import Scan

LISTENER = {"name": "pop3", "port": 110}


def _config(**sections: Any) -> Policy:
    return Policy.model_validate({"listeners": [LISTENER], **sections})


def _error(model: type[Any], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


# ------------------------------------------------------------------ every model
def test_unknown_keys_are_refused_at_every_level() -> None:
    assert "extra_forbidden" in _error(Policy, {"listeners": [LISTENER], "listner": []})
    assert "extra_forbidden" in _error(Policy, {"listeners": [{**LISTENER, "prot": 1}]})


def test_models_are_frozen() -> None:
    config = _config()
    with pytest.raises(ValidationError):
        config.limits.max_sessions = 5  # type: ignore[misc]


def test_defaults_are_the_documented_ones() -> None:
    config = _config()
    assert config.listeners[0].mode == "starttls"
    assert not config.listeners[0].allow_plaintext_login
    assert config.upstream.verify
    assert (config.limits.idle_timeout, config.limits.login_timeout) == (600.0, 60.0)


# ------------------------------------------------------------------ listeners
def test_at_least_one_listener() -> None:
    assert "at least one listener" in _error(Policy, {"listeners": []})


def test_plain_listener_needs_consent() -> None:
    assert "allow_plaintext_login" in _error(Listener, {**LISTENER, "mode": "plain"})
    consented = Listener.model_validate({**LISTENER, "mode": "plain",
                                         "allow_plaintext_login": True})
    assert consented.mode == "plain"


@pytest.mark.parametrize("host", ["", "two words"])
def test_listener_host_must_be_an_address_or_a_name(host: str) -> None:
    assert "IP address or a host name" in _error(Listener, {**LISTENER, "host": host})


def test_ipv4_mapped_networks_become_ipv4() -> None:
    listener = Listener.model_validate({**LISTENER, "allow": ["::ffff:192.0.2.0/120"]})
    assert listener.allow == (ipaddress.ip_network("192.0.2.0/24"),)


# ------------------------------------------------------------------ limits
def test_idle_timeout_keeps_the_rfc_1939_minimum() -> None:
    # RFC 1939 section 3: the autologout timer "MUST be of at least 10 minutes' duration".
    assert "greater than or equal to 600" in _error(Limits, {"idle_timeout": 599})


def test_login_timeout_must_outlast_the_failure_delay() -> None:
    message = _error(Limits, {"login_timeout": 2, "auth_failure_delay": 2})
    assert "login_timeout (2 s) must be longer than auth_failure_delay (2 s)" in message


def test_listen_backlog_holds_a_burst_of_max_sessions_by_default() -> None:
    # Issue 18 item 4: asyncio's default of 100 dropped the SYNs of a 1,000-client burst.
    assert Limits().listen_backlog == LISTEN_BACKLOG >= Limits().max_sessions
    assert Limits.model_validate({"listen_backlog": 511}).listen_backlog == 511  # nginx's
    assert "greater than or equal to 1" in _error(Limits, {"listen_backlog": 0})
    assert "less than or equal to 65535" in _error(Limits, {"listen_backlog": 65536})


# ------------------------------------------------------------------ users, routes, Redis
@pytest.mark.parametrize("pattern", ["a b", "x\r\n", ""])
def test_user_patterns_without_spaces_or_line_breaks(pattern: str) -> None:
    _error(UserRule, {"match": pattern})


def test_scan_takes_the_lockout_redis_unless_it_names_its_own() -> None:
    shared = _config(lockout={"redis_url": "redis://10.0.0.5:6379/0"})
    assert shared.scan.redis_url == "redis://10.0.0.5:6379/0"
    own = _config(lockout={"redis_url": "redis://10.0.0.5:6379/0"},
                  scan={"redis_url": "rediss://10.0.0.6:6380/1"})
    assert own.scan.redis_url == "rediss://10.0.0.6:6380/1"
    assert "must be a Redis URL" in _error(Scan, {"redis_url": "http://10.0.0.6"})


# ------------------------------------------------------------------ semantic_problems
def test_a_valid_policy_has_no_problems() -> None:
    assert semantic_problems(_config(users=[{"match": "alice"}, {"match": "*"}])) == []


def test_duplicate_listener_names_and_sockets() -> None:
    config = Policy.model_validate({"listeners": [LISTENER, {"name": "pop3", "port": 110}]})
    assert semantic_problems(config) == [
        (("listeners", 1, "name"), "listener name 'pop3' already used by listeners.0"),
        (("listeners", 1, "port"), "127.0.0.1 port 110 already used by listeners.0"),
    ]


def test_route_to_an_unknown_upstream() -> None:
    config = _config(upstreams={"b": {}}, routes=[{"match": "x", "upstream": "a"}])
    assert semantic_problems(config) == [
        (("routes", 0, "upstream"), "unknown upstream 'a'; known: default, b")]


@pytest.mark.parametrize(("early", "later", "shadowed"), [
    ("*", "alice", True),
    ("alice", "alice", True),
    ("*@example.com", "bob@EXAMPLE.com", True),
    ("*@example.com", "*@example.com.evil", False),
    ("*@example.com", "b*@example.com", False),  # a glob later: not provably covered
    ("alice", "*", False),
])
def test_a_rule_that_can_never_match_is_reported(early: str, later: str, shadowed: bool) -> None:
    problems = semantic_problems(_config(users=[{"match": early}, {"match": later}]))
    assert bool(problems) is shadowed
    if shadowed:
        assert problems[0][0] == ("users", 1, "match")
