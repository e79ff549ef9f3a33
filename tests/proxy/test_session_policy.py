"""Per-user policy in the session (rules, routing, no existence leak), on the session harness.

Moved from test_policy_enforcement.py, where each login was a loopback connection from a bound
source address to the demo upstream.  ``SessionPair(client=...)`` sets the client's address;
the upstream answers as the demo does (``demo_responder``); the failure floor is timed on the
harness's virtual clock.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from tests.helpers import make_config
from tests.support.harness import ScriptedUpstream, SessionPair, demo_responder, run

AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
SECOND_PORT = 2110  # the second upstream's port in the routing test


def _upstream(demo: DemoUpstream) -> ScriptedUpstream:
    return ScriptedUpstream(respond=demo_responder(demo))


def _login(config: Policy, upstream: ScriptedUpstream, user: str, password: str,
           client: str = "127.0.0.1", then: bytes = b"") -> tuple[bytes, float]:
    """USER/PASS in a new session: the PASS reply (and the answer to ``then``, if given) and
    how long the PASS took on the virtual clock."""
    result: list[tuple[bytes, float]] = []

    async def main() -> None:
        async with SessionPair(config, upstream, client=client) as pair:
            assert pair.received().startswith(b"+OK")
            assert (await pair.exchange(f"USER {user}\r\n".encode())).startswith(b"+OK")
            started = pair.now()
            reply = await pair.exchange(f"PASS {password}\r\n".encode())
            elapsed = pair.now() - started
            if then:
                reply += await pair.exchange(then)
            result.append((reply, elapsed))

    run(main)
    return result[0]


def _config(**overrides: Any) -> Policy:
    return make_config(110, **overrides)


def test_user_allowed_networks() -> None:
    upstream = _upstream(DemoUpstream())
    config = _config(users=[{"match": "demo", "allow": ["127.0.0.2/32"]}])
    assert _login(config, upstream, "demo", "demo", "127.0.0.2")[0].startswith(b"+OK")
    assert _login(config, upstream, "demo", "demo", "127.0.0.3")[0] == AUTH_FAILED
    # the denied attempt never reached the upstream: one USER/PASS pair only
    assert upstream.verbs.count("PASS") == 1


def test_user_rule_require_tls_on_plaintext_listener() -> None:
    demo = DemoUpstream()
    demo.users[b"ann@secure.example"] = Mailbox(b"pw")
    upstream = _upstream(demo)
    config = _config(users=[{"match": "*@secure.example", "require_tls": True}])
    assert _login(config, upstream, "ann@secure.example", "pw")[0] == AUTH_FAILED
    assert _login(config, upstream, "demo", "demo")[0].startswith(b"+OK")


def test_user_rule_mechanisms() -> None:
    upstream = _upstream(DemoUpstream())
    config = _config(users=[{"match": "demo", "mechanisms": ["PLAIN"]}])
    assert _login(config, upstream, "demo", "demo")[0] == AUTH_FAILED

    async def main() -> None:
        async with SessionPair(config, upstream) as pair:
            plain = base64.b64encode(b"\0demo\0demo")
            assert (await pair.exchange(b"AUTH PLAIN " + plain + b"\r\n")).startswith(b"+OK")

    run(main)


def test_first_matching_user_rule_applies() -> None:
    demo = DemoUpstream()
    demo.users[b"other"] = Mailbox(b"pw")
    upstream = _upstream(demo)
    config = _config(users=[{"match": "demo"}, {"match": "*", "allow": ["10.0.0.0/8"]}])
    assert _login(config, upstream, "demo", "demo")[0].startswith(b"+OK")
    assert _login(config, upstream, "other", "pw")[0] == AUTH_FAILED


def test_routing_by_domain_to_two_upstreams() -> None:
    first = DemoUpstream({b"a@one.example": Mailbox(b"pw")})
    second = _upstream(DemoUpstream(
        {b"b@two.example": Mailbox(b"pw", [b"Subject: two\r\n\r\nx\r\n"])}))
    router = ScriptedUpstream(respond=demo_responder(first), routes={SECOND_PORT: second})
    config = _config(routes=[{"match": "*@two.example", "upstream": "two"}],
                     upstreams={"two": {"host": "127.0.0.1", "port": SECOND_PORT}})
    reply, _ = _login(config, router, "b@two.example", "pw", then=b"STAT\r\n")
    # the second box: one message
    assert reply == b"+OK logged in\r\n+OK 1 19\r\n"
    assert _login(config, router, "a@one.example", "pw")[0].startswith(b"+OK")
    assert router.verbs.count("PASS") == 1
    assert second.verbs.count("PASS") == 1


def test_user_existence_is_not_revealed() -> None:
    """Unknown user, wrong password and a policy denial: same bytes, same timing floor."""
    delay = 0.4
    demo = DemoUpstream()
    demo.users[b"blocked"] = Mailbox(b"pw")
    upstream = _upstream(demo)
    config = _config(users=[{"match": "blocked", "allow": ["10.0.0.0/8"]}],
                     limits={"auth_failure_delay": delay})
    timings: dict[str, float] = {}
    for case, user, password in (("unknown", "nobody", "x"), ("wrong", "demo", "x"),
                                 ("policy", "blocked", "pw")):
        reply, timings[case] = _login(config, upstream, user, password)
        assert reply == AUTH_FAILED, case
    # On the virtual clock the floor is exact: every refusal takes the configured delay.
    assert timings == pytest.approx(dict.fromkeys(timings, delay))
