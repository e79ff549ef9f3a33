"""USER and PASS to the upstream in one write only where it lists PIPELINING (RFC 2449 s6.6)."""

from __future__ import annotations

import pytest

from popproxy.pop3.capa import Capability
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.upstream_caps import CAPA_TTL, UpstreamCapabilities
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3


def _login_batches(demo: DemoUpstream) -> list[list[bytes]]:
    return [b for b in demo.command_batches if b"USER" in b or b"PASS" in b]


@pytest.mark.parametrize("pipelining", [True, False])
def test_user_and_pass_pipelined_only_when_listed(loop_thread: LoopThread,
                                                   pipelining: bool) -> None:
    with running_demo(loop_thread, DemoUpstream(pipelining=pipelining)) as demo, \
            running_proxy(make_config(demo.port), loop_thread) as proxy:
        for _ in range(2):
            with RawPOP3(proxy.port) as c:
                c.login("demo", "demo")
                assert c.command("STAT").startswith(b"+OK 3 ")
    expected = [[b"USER", b"PASS"]] * 2 if pipelining else [[b"USER"], [b"PASS"]] * 2
    assert _login_batches(demo) == expected
    assert demo.commands_seen.count(b"CAPA") == 1  # learned once, then remembered


@pytest.mark.parametrize("user, password", [("demo", "wrong"), ("nobody", "demo")])
def test_pipelined_login_failure_is_a_normal_auth_failure(
    loop_thread: LoopThread, user: str, password: str
) -> None:
    with running_demo(loop_thread, DemoUpstream(pipelining=True)) as demo, \
            running_proxy(make_config(demo.port), loop_thread) as proxy, \
            RawPOP3(proxy.port) as c:
        assert c.command(f"USER {user}").startswith(b"+OK")
        assert c.command(f"PASS {password}") == b"-ERR [AUTH] authentication failed\r\n"
        c.login("demo", "demo")  # the session goes on normally
        assert c.command("STAT").startswith(b"+OK 3 ")


def test_capabilities_are_relearned_after_ttl() -> None:
    now = [1000.0]
    caps = UpstreamCapabilities(clock=lambda: now[0])
    address = ("127.0.0.1", 110, "plain")
    assert caps.pipelining(address) is None
    assert caps.learn(address, (Capability("TOP"), Capability("PIPELINING"))) is True
    assert caps.pipelining(address) is True
    assert caps.pipelining(("127.0.0.1", 111, "plain")) is None  # per address
    now[0] += CAPA_TTL + 1
    assert caps.pipelining(address) is None
    assert caps.learn(address, ()) is False  # e.g. an RFC 1939 server answering -ERR to CAPA
    assert caps.pipelining(address) is False
