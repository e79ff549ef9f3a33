"""``explain``'s decisions (sans-io): the proxy's own decision functions, one user, one address."""

from __future__ import annotations

import ipaddress

import pytest

from popproxy.policy import Policy
from popproxy.policy.explain import UnknownListener, describe, explain, find_listener

POLICY = Policy.model_validate({
    "listeners": [
        {"name": "pop3s", "port": 995, "mode": "tls", "deny": ["192.0.2.0/24"]},
        {"name": "legacy", "port": 110, "mode": "plain", "allow_plaintext_login": True,
         "allow": ["10.0.0.0/8"]},
        {"name": "stls", "port": 1110, "mode": "starttls"},
    ],
    "upstreams": {"old": {"host": "10.0.0.9", "port": 995, "mode": "tls"}},
    "routes": [{"match": "*@old.example", "upstream": "old"}],
    "users": [{"match": "boss@*", "allow": ["10.1.0.0/16"], "mechanisms": ["USER"],
               "require_tls": True}],
})
ADDR = ipaddress.ip_address


def test_a_user_without_rules_is_allowed_and_routed_to_the_default() -> None:
    exp = explain(POLICY, "alice@x.example", ADDR("198.51.100.7"), "pop3s")
    assert exp.allowed and exp.rule is None and exp.route == "default"
    assert describe(exp) == [
        "user: alice@x.example", "from: 198.51.100.7",
        "listener: pop3s (127.0.0.1:995, tls)",
        "connect: allowed (listener allows source)", "user rule: none (any user)",
        "login USER: allowed (no user rule)", "login PLAIN: allowed (no user rule)",
        "login LOGIN: allowed (no user rule)", "route: default",
        "upstream: 127.0.0.1:110 (plain)"]


def test_denied_networks_rules_tls_and_mechanisms_are_each_named() -> None:
    denied = explain(POLICY, "alice@x.example", ADDR("192.0.2.5"), "pop3s")
    assert not denied.allowed
    assert denied.connect.reason == "source network denied by listener"
    boss = explain(POLICY, "boss@old.example", ADDR("10.1.2.3"), "legacy")
    assert boss.connect.allowed and boss.rule is not None
    assert boss.logins["USER"].reason == "TLS required for users matching 'boss@*'"
    assert boss.route == "old" and boss.upstream.host == "10.0.0.9"
    tls = explain(POLICY, "boss@old.example", ADDR("10.9.9.9"), "stls")
    assert tls.logins["USER"].reason == "source network not allowed for users matching 'boss@*'"
    ok = explain(POLICY, "boss@old.example", ADDR("10.1.2.3"), "pop3s")
    assert ok.logins["USER"].allowed and not ok.logins["PLAIN"].allowed
    assert "upstream: 10.0.0.9:995 (tls)" in describe(ok)


def test_the_only_listener_needs_no_name_and_starttls_counts_as_tls() -> None:
    policy = Policy.model_validate({"listeners": [{"name": "p", "port": 110}],
                                    "users": [{"match": "*", "require_tls": True}]})
    exp = explain(policy, "a", ADDR("127.0.0.1"), None)  # starttls: login only after STLS
    assert exp.allowed and exp.listener.name == "p"
    # An admin reading "allowed" must not expect a login before STLS (RFC 2595 section 4).
    assert "login USER: allowed (user rule '*'), after STLS" in describe(exp)
    plain_ok = Policy.model_validate({"listeners": [{"name": "p", "port": 110,
                                                     "allow_plaintext_login": True}]})
    assert not any("STLS" in line for line in describe(explain(plain_ok, "a",
                                                                ADDR("127.0.0.1"), None)))


def test_unknown_or_ambiguous_listener_lists_the_names() -> None:
    with pytest.raises(UnknownListener, match="no listener 'x'; the policy has: pop3s, "
                                              "legacy, stls"):
        find_listener(POLICY, "x")
    with pytest.raises(UnknownListener, match="several listeners, choose one with --listener"):
        find_listener(POLICY, None)
