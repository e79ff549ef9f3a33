"""Zero-trust policy in the session: listener allow/deny, per-user rules, no existence leak."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy

AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"


@contextmanager
def _proxy(loop: LoopThread, demo: DemoUpstream, **overrides: Any) -> Iterator[RunningProxy]:
    with running_proxy(make_config(demo.port, **overrides), loop) as proxy:
        yield proxy


def _listener(**extra: Any) -> list[dict[str, Any]]:
    return [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
             "allow_plaintext_login": True, **extra}]


class Client:
    """A tiny line client that can bind a chosen loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline()

    def cmd(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _greeted(port: int, source: str, host: str = "127.0.0.1") -> bool:
    client = Client(port, source, host)
    try:
        return client.line().startswith(b"+OK")
    except (ConnectionError, TimeoutError):
        return False
    finally:
        client.close()


def test_listener_allow_list(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream,
                listeners=_listener(allow=["127.0.0.2/32", "127.0.1.0/24"])) as proxy:
        assert _greeted(proxy.port, "127.0.0.2")
        assert _greeted(proxy.port, "127.0.1.77")
        assert not _greeted(proxy.port, "127.0.0.3")
        assert not _greeted(proxy.port, "127.0.0.1")


def test_listener_deny_wins_over_allow(loop_thread: LoopThread,
                                       demo_upstream: DemoUpstream) -> None:
    with _proxy(loop_thread, demo_upstream,
                listeners=_listener(allow=["127.0.0.0/8"], deny=["127.0.0.9/32"])) as proxy:
        assert _greeted(proxy.port, "127.0.0.8")
        assert not _greeted(proxy.port, "127.0.0.9")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_listener_rules_for_ipv6(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    listener = _listener(host="::1", allow=["::1/128", "10.0.0.0/8"])
    with _proxy(loop_thread, demo_upstream, listeners=listener) as proxy:
        assert _greeted(proxy.port, "::1", host="::1")
    denied = _listener(host="::1", deny=["::/0"])
    with _proxy(loop_thread, demo_upstream, listeners=denied) as proxy:
        assert not _greeted(proxy.port, "::1", host="::1")


def _login(port: int, user: str, password: str, source: str = "127.0.0.1") -> bytes:
    client = Client(port, source)
    try:
        client.line()
        client.cmd(f"USER {user}")
        return client.cmd(f"PASS {password}")
    finally:
        client.close()


def test_user_allowed_networks(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    users = [{"match": "demo", "allow": ["127.0.0.2/32"]}]
    with _proxy(loop_thread, demo_upstream, users=users) as proxy:
        assert _login(proxy.port, "demo", "demo", "127.0.0.2").startswith(b"+OK")
        assert _login(proxy.port, "demo", "demo", "127.0.0.3") == AUTH_FAILED
    # the denied attempt never reached the upstream: one USER/PASS pair only
    assert demo_upstream.commands_seen.count(b"PASS") == 1


def test_user_rule_require_tls_on_plaintext_listener(
    loop_thread: LoopThread, demo_upstream: DemoUpstream
) -> None:
    users = [{"match": "*@secure.example", "require_tls": True}]
    demo_upstream.users[b"ann@secure.example"] = Mailbox(b"pw")
    with _proxy(loop_thread, demo_upstream, users=users) as proxy:
        assert _login(proxy.port, "ann@secure.example", "pw") == AUTH_FAILED
        assert _login(proxy.port, "demo", "demo").startswith(b"+OK")


def test_user_rule_mechanisms(loop_thread: LoopThread, demo_upstream: DemoUpstream) -> None:
    users = [{"match": "demo", "mechanisms": ["PLAIN"]}]
    with _proxy(loop_thread, demo_upstream, users=users) as proxy:
        assert _login(proxy.port, "demo", "demo") == AUTH_FAILED
        client = Client(proxy.port)
        client.line()
        # base64("\0demo\0demo")
        assert client.cmd("AUTH PLAIN AGRlbW8AZGVtbw==").startswith(b"+OK")
        client.close()


def test_first_matching_user_rule_applies(loop_thread: LoopThread,
                                          demo_upstream: DemoUpstream) -> None:
    users = [{"match": "demo"}, {"match": "*", "allow": ["10.0.0.0/8"]}]
    demo_upstream.users[b"other"] = Mailbox(b"pw")
    with _proxy(loop_thread, demo_upstream, users=users) as proxy:
        assert _login(proxy.port, "demo", "demo").startswith(b"+OK")
        assert _login(proxy.port, "other", "pw") == AUTH_FAILED


def test_routing_by_domain_to_two_upstreams(loop_thread: LoopThread) -> None:
    first = DemoUpstream({b"a@one.example": Mailbox(b"pw")})
    second = DemoUpstream({b"b@two.example": Mailbox(b"pw", [b"Subject: two\r\n\r\nx\r\n"])})
    with running_demo(loop_thread, first), running_demo(loop_thread, second):
        routes = [{"match": "*@two.example", "upstream": "two"}]
        upstreams = {"two": {"host": "127.0.0.1", "port": second.port}}
        with _proxy(loop_thread, first, routes=routes, upstreams=upstreams) as proxy:
            client = Client(proxy.port)
            client.line()
            client.cmd("USER b@two.example")
            assert client.cmd("PASS pw").startswith(b"+OK")
            assert client.cmd("STAT") == b"+OK 1 19\r\n"  # the second box: one message
            client.close()
            assert _login(proxy.port, "a@one.example", "pw").startswith(b"+OK")
    assert first.commands_seen.count(b"PASS") == 1
    assert second.commands_seen.count(b"PASS") == 1


def test_user_existence_is_not_revealed(loop_thread: LoopThread,
                                        demo_upstream: DemoUpstream) -> None:
    """Unknown user, wrong password and a policy denial: same bytes, same timing floor."""
    delay = 0.4
    users = [{"match": "blocked", "allow": ["10.0.0.0/8"]}]
    demo_upstream.users[b"blocked"] = Mailbox(b"pw")
    with _proxy(loop_thread, demo_upstream, users=users,
                limits={"auth_failure_delay": delay}) as proxy:
        timings: dict[str, float] = {}
        for case, user, password in (("unknown", "nobody", "x"), ("wrong", "demo", "x"),
                                     ("policy", "blocked", "pw")):
            started = time.monotonic()
            assert _login(proxy.port, user, password) == AUTH_FAILED, case
            timings[case] = time.monotonic() - started
    for case, seconds in timings.items():
        assert delay <= seconds < delay + 0.25, (case, timings)
