"""IPv4-mapped IPv6 networks (``::ffff:192.0.2.0/120``) in allow/deny lists.

The attack: an admin denies (or allows) ``::ffff:192.0.2.0/120``, check-config says OK, and the
rule never matches, because client addresses are compared as IPv4.  A deny list that silently
does nothing lets the network in.  Mapped networks are normalised to IPv4 when the policy is
loaded, and mapped client addresses are matched as IPv4, whichever form either side takes.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from popproxy.check_cli import check_config
from popproxy.policy import Policy, load_config
from popproxy.policy.decisions import connect_decision, in_networks, parse_address, user_decision
from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, make_config, running_proxy

POLICY = """\
listeners:
  - name: pop3s
    port: 995
    mode: tls
    deny: ["::ffff:192.0.2.0/120", "::ffff:c633:6407/128", "2001:db8::/32"]
  - name: lb
    port: 9995
    mode: tls
    allow: ["::ffff:0:0/96"]
    proxy_protocol: {trusted: ["::ffff:10.0.0.0/104"]}
users:
  - match: "svc-*"
    allow: ["::ffff:198.51.100.0/120"]
"""


@pytest.fixture
def config(tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return load_config(path)


def test_mapped_networks_are_loaded_as_ipv4(config: Policy) -> None:
    pop3s, lb = config.listeners
    assert pop3s.deny == (ipaddress.ip_network("192.0.2.0/24"),
                          ipaddress.ip_network("198.51.100.7/32"),  # hex form ::ffff:c633:6407
                          ipaddress.ip_network("2001:db8::/32"))  # real IPv6 stays IPv6
    assert lb.allow == (ipaddress.ip_network("0.0.0.0/0"),)  # the whole mapped range
    assert lb.proxy_protocol is not None
    assert lb.proxy_protocol.trusted == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.users[0].allow == (ipaddress.ip_network("198.51.100.0/24"),)


@pytest.mark.parametrize("client", ["192.0.2.9", "::ffff:192.0.2.9", "198.51.100.7"])
def test_mapped_deny_network_denies_the_ipv4_client(config: Policy, client: str) -> None:
    """Either form of the client address (parsed or a raw mapped IPv6Address) is denied."""
    parsed = parse_address(client)
    raw = ipaddress.ip_address(client)
    assert not connect_decision(config.listeners[0], parsed).allowed
    assert not connect_decision(config.listeners[0], raw).allowed


def test_mapped_deny_network_leaves_other_clients_alone(config: Policy) -> None:
    for client in ("192.0.3.1", "::ffff:192.0.3.1", "198.51.100.8", "2001:db9::1"):
        assert connect_decision(config.listeners[0], ipaddress.ip_address(client)).allowed
    assert not connect_decision(config.listeners[0], ipaddress.ip_address("2001:db8::1")).allowed


def test_mapped_allow_network_admits_ipv4_and_mapped_clients_only(config: Policy) -> None:
    lb = config.listeners[1]
    assert connect_decision(lb, ipaddress.ip_address("203.0.113.5")).allowed
    assert connect_decision(lb, ipaddress.ip_address("::ffff:203.0.113.5")).allowed
    assert not connect_decision(lb, ipaddress.ip_address("2001:db8::5")).allowed
    assert lb.proxy_protocol is not None
    assert in_networks(ipaddress.ip_address("::ffff:10.1.2.3"), lb.proxy_protocol.trusted)
    assert not in_networks(ipaddress.ip_address("11.1.2.3"), lb.proxy_protocol.trusted)


def test_mapped_network_in_user_rule(config: Policy) -> None:
    inside, outside = ipaddress.ip_address("::ffff:198.51.100.9"), parse_address("192.0.2.1")
    assert user_decision(config, "svc-app", inside, True, "USER").allowed
    assert user_decision(config, "svc-app", parse_address("198.51.100.9"), True, "USER").allowed
    assert not user_decision(config, "svc-app", outside, True, "USER").allowed


def test_check_config_accepts_the_policy_and_it_takes_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    assert check_config([path]) == 0
    assert ": OK" in capsys.readouterr().out
    assert not connect_decision(load_config(path).listeners[0],
                                parse_address("192.0.2.200")).allowed


def test_mapped_deny_network_refuses_a_real_ipv4_connection(
    loop_thread: LoopThread, demo_upstream: DemoUpstream
) -> None:
    listeners = [{"name": "pop3", "host": "127.0.0.1", "port": 1, "mode": "plain",
                  "allow_plaintext_login": True, "deny": ["::ffff:127.0.0.2/128"]}]
    with running_proxy(make_config(demo_upstream.port, listeners=listeners),
                       loop_thread) as proxy:
        assert _greeting(proxy.port, "127.0.0.3").startswith(b"+OK")
        assert _greeting(proxy.port, "127.0.0.2") == b""  # closed without a word


def _greeting(port: int, source: str) -> bytes:
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            return sock.recv(100)
        except ConnectionResetError:
            return b""
