"""The client goes away in the middle of a download, or stops reading it.

Defined outcome: the session ends, the upstream connection is closed without QUIT (so a DELE
given earlier in the session is not committed: RFC 1939 section 6), the session slot is freed
(``popproxy_active_sessions`` back to 0) and the proxy keeps serving.
"""

from __future__ import annotations

import socket

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from tests.faults.support import (
    FakeUpstream,
    Observed,
    Reply,
    demo_session,
    fake_upstream,
    fault_rig,
    faulty_upstream,
    victim_login,
)
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

BIG = 32 * 1024 * 1024  # far more than the loopback socket buffers hold on either side


def _big_message(size: int) -> bytes:
    line = b"0123456789" * 7 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


def _leave(client: RawPOP3, how: str) -> None:
    if how == "reset":
        client.reset()
    else:
        client.sock.shutdown(socket.SHUT_RDWR)
        client.close()


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_disappears_mid_retr_no_deletion_lost(loop_thread: LoopThread, how: str) -> None:
    """A real mailbox (the demo upstream): DELE 1, start RETR 2, vanish; nothing is deleted."""
    small = b"Subject: small\r\n\r\nhello\r\n"
    demo = DemoUpstream({b"demo": Mailbox(b"demo", [small, _big_message(BIG), small])})
    observed = Observed.new()
    with running_demo(loop_thread, demo):
        config = make_config(demo.port)
        with running_proxy(config, loop_thread, observed.observer) as proxy:
            with RawPOP3(proxy.port) as client:
                client.login("demo", "demo")
                assert client.command("DELE 1").startswith(b"+OK")
                client.send(b"RETR 2\r\n")
                assert client.read_line().startswith(b"+OK")
                client.sock.recv(256 * 1024)  # part of the body, then gone
                _leave(client, how)
            wait_for(lambda: proxy.server.session_count == 0, 10, "the session to end")
            assert demo.commands_seen == [b"CAPA", b"USER", b"PASS", b"DELE", b"RETR"]  # no QUIT
            assert observed.sample("popproxy_active_sessions", listener="pop3") == 0
            assert observed.sample("popproxy_session_duration_seconds_count",
                                   listener="pop3") == 1
            assert [e["result"] for e in observed.events("login")] == ["ok"]
            with RawPOP3(proxy.port) as again:  # message 1 is still there
                again.login("demo", "demo")
                assert again.command("STAT").startswith(b"+OK 3 ")
                assert again.command("QUIT").startswith(b"+OK")


@pytest.mark.parametrize("how", ["reset", "close"])
def test_client_disappears_mid_retr_upstream_closed(loop_thread: LoopThread, how: str) -> None:
    """The upstream side: its connection is closed by the proxy and never sees QUIT."""
    fake = FakeUpstream(replies={"RETR": Reply(b"+OK\r\n" + _big_message(BIG) + b".\r\n")})
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port)) as rig:
        with victim_login(rig.port) as client:
            assert client.command("DELE 1") == b"+OK\r\n"
            client.send(b"RETR 1\r\n")
            assert client.read_line() == b"+OK\r\n"
            client.sock.recv(256 * 1024)
            _leave(client, how)
        rig.idle(10)
        wait_for(lambda: fake.closed_by_proxy == 1, what="the upstream connection to close")
        assert fake.verbs == ["USER", "PASS", "DELE", "RETR"]
        assert rig.observed.sample("popproxy_active_sessions", listener="pop3") == 0
        assert demo_session(rig.port) < 2


def test_client_that_stops_reading_is_dropped(loop_thread: LoopThread) -> None:
    """A logged-in client starts a big RETR and never reads it ("slow read"): logged out
    after the idle timeout like an idle client, upstream closed without QUIT."""
    fake = FakeUpstream(replies={"RETR": Reply(b"+OK\r\n" + _big_message(BIG) + b".\r\n")})
    with fake_upstream(loop_thread, fake) as port:
        config = make_config(1, upstream=faulty_upstream(port))
        config = config.model_copy(
            update={"limits": config.limits.model_copy(update={"idle_timeout": 1.0})})
        with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as client:
            client.login("someone", "secret")
            client.send(b"RETR 1\r\n")  # ... and never read the answer
            wait_for(lambda: proxy.server.session_count == 0, 2.5, "the session to end")
            assert fake.verbs == ["USER", "PASS", "RETR"]
            wait_for(lambda: fake.closed_by_proxy == 1, what="the upstream connection to close")
