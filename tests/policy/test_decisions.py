"""Policy decisions as values: connect, per-user rules and routing (``policy/decisions.py``).

Denials come back as ``Decision(False, reason)``, never as exceptions; the reason names the
rule so that the audit log can say why.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from popproxy.policy.decisions import (
    DEFAULT_UPSTREAM,
    PARSED_ADDRESSES,
    Decision,
    connect_decision,
    in_networks,
    parse_address,
    route_for,
    rule_for,
    user_decision,
    user_matches,
)
from popproxy.policy.schema import Listener, Policy


def _listener(**fields: Any) -> Listener:
    return Listener.model_validate({"name": "pop3", "port": 110, **fields})


def _config(**sections: Any) -> Policy:
    return Policy.model_validate({"listeners": [{"name": "pop3", "port": 110}], **sections})


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = parse_address(text)
    assert address is not None
    return address


# ------------------------------------------------------------------ addresses
@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # dual-stack socket: compared as IPv4
    ("fe80::1%eth0", "fe80::1"),  # the zone index is not part of the address
    ("2001:db8::1", "2001:db8::1"),
])
def test_parse_address(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize("text", ["", "localhost", "192.0.2.300", "unix:/run/x"])
def test_parse_address_rejects_what_is_not_an_ip(text: str) -> None:
    assert parse_address(text) is None


def test_parsed_addresses_are_remembered_within_a_bound() -> None:
    """Parsed at every connection (issue 18: ~16 Python calls each): the same peer's address
    is parsed once, and a client cycling through addresses cannot grow the memo."""
    first = parse_address("::ffff:198.51.100.9")
    assert parse_address("::ffff:198.51.100.9") is first
    assert str(first) == "198.51.100.9"
    for n in range(PARSED_ADDRESSES + 10):
        parse_address(f"2001:db8::{n:x}")
    assert parse_address.cache_info().currsize <= PARSED_ADDRESSES


def test_in_networks_matches_by_family() -> None:
    nets = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"))
    assert in_networks(_ip("192.0.2.9"), nets)
    assert in_networks(ipaddress.ip_address("::ffff:192.0.2.9"), nets)
    assert in_networks(_ip("2001:db8::5"), nets)
    assert not in_networks(_ip("198.51.100.1"), nets)


# ------------------------------------------------------------------ connect
def test_connect_deny_wins_over_allow() -> None:
    listener = _listener(allow=["192.0.2.0/24"], deny=["192.0.2.128/25"])
    assert connect_decision(listener, _ip("192.0.2.1")) == Decision(True, "listener allows source")
    denied = connect_decision(listener, _ip("192.0.2.200"))
    assert denied == Decision(False, "source network denied by listener")


def test_connect_allow_list_admits_only_its_networks() -> None:
    listener = _listener(allow=["192.0.2.0/24"])
    decision = connect_decision(listener, _ip("198.51.100.1"))
    assert not decision.allowed and "allow list" in decision.reason


def test_connect_without_lists_admits_everyone_but_an_unknown_address() -> None:
    assert connect_decision(_listener(), _ip("203.0.113.5")).allowed
    assert connect_decision(_listener(), None) == Decision(False, "client address unknown")


# ------------------------------------------------------------------ users
@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("alice", "ALICE", True),  # case-insensitive
    ("*@example.com", "bob@Example.COM", True),
    ("*@example.com", "bob@example.org", False),
    ("a?ice", "alice", True),
    ("alice", "alice2", False),
])
def test_user_matches(pattern: str, name: str, matches: bool) -> None:
    assert user_matches(pattern, name) is matches


def test_first_matching_user_rule_applies() -> None:
    config = _config(users=[{"match": "alice", "require_tls": True}, {"match": "*"}])
    rule = rule_for(config.users, "Alice")
    assert rule is not None and rule.require_tls
    other = rule_for(config.users, "bob")
    assert other is not None and not other.require_tls


def test_user_decision_checks_network_then_tls_then_mechanism() -> None:
    config = _config(users=[{"match": "alice", "allow": ["192.0.2.0/24"], "require_tls": True,
                             "mechanisms": ["PLAIN"]}])
    inside, outside = _ip("192.0.2.10"), _ip("198.51.100.10")
    assert not user_decision(config, "alice", outside, True, "PLAIN").allowed
    assert not user_decision(config, "alice", None, True, "PLAIN").allowed
    no_tls = user_decision(config, "alice", inside, False, "PLAIN")
    assert no_tls == Decision(False, "TLS required for users matching 'alice'")
    wrong_mech = user_decision(config, "alice", inside, True, "USER")
    assert wrong_mech == Decision(False, "USER not allowed for users matching 'alice'")
    assert user_decision(config, "alice", inside, True, "PLAIN") == Decision(
        True, "user rule 'alice'")


def test_user_without_a_rule_is_allowed() -> None:
    assert user_decision(_config(), "carol", None, False, "USER") == Decision(True, "no user rule")


# ------------------------------------------------------------------ routes
def test_route_for_picks_the_first_matching_route_else_the_default() -> None:
    config = _config(
        upstreams={"legacy": {"host": "10.0.0.2"}, "new": {"host": "10.0.0.3"}},
        routes=[{"match": "*@old.example", "upstream": "legacy"},
                {"match": "vip", "upstream": "default"},
                {"match": "*", "upstream": "new"}],
    )
    name, upstream = route_for(config, "ann@OLD.example")
    assert (name, upstream.host) == ("legacy", "10.0.0.2")
    assert route_for(config, "vip") == (DEFAULT_UPSTREAM, config.upstream)
    assert route_for(config, "zed")[0] == "new"
    assert route_for(_config(), "anyone") == (DEFAULT_UPSTREAM, _config().upstream)
