"""Zero-trust policy at the listener: allow/deny networks for the connecting address.

These stay on real sockets: the listener decides on the address a TCP connection comes from
(bound loopback sources, IPv6), before any session exists.  Per-user rules, routing and the
no-existence-leak timing are session logic, tested on the session harness in
test_session_policy.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy


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
