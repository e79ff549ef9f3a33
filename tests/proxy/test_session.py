"""Session behaviour that needs real sockets, in front of the in-process demo upstream.

The session logic (commands, replies, state, SASL, what is and is not forwarded) is tested
on the session harness in test_session_logic.py and test_session_sasl.py.  What stays here
needs a listening server or real TCP: a client reset in the middle of a 4 MiB RETR body (the
body must still be in flight, which needs real flow control), and the server running two
sessions at once (its session count).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

DEMO_STAT = b"+OK %d %d\r\n" % (len(SAMPLE_MESSAGES), sum(map(len, SAMPLE_MESSAGES)))


def _wait_closed(proxy: RunningProxy, upstream: DemoUpstream) -> None:
    """The proxy session has ended and the upstream has read to its EOF: anything the proxy
    (wrongly) sent upstream on close is in ``commands_seen`` now."""
    wait_for(lambda: proxy.server.session_count == 0, what="the proxy session to end")
    wait_for(lambda: upstream.open_connections == 0, what="the upstream to see the close")


def test_client_disconnect_during_big_retr_sends_no_quit(loop_thread: LoopThread) -> None:
    from popproxy.proxy.demo_upstream import Mailbox

    big = b"Subject: big\r\n\r\n" + b"0123456789abcdef" * 65536 * 4 + b"\r\n"  # 4 MiB
    demo = DemoUpstream({b"demo": Mailbox(b"demo", [big, SAMPLE_MESSAGES[0]])})
    loop_thread.call(demo.start())
    try:
        with running_proxy(make_config(demo.port), loop_thread) as proxy:
            c = RawPOP3(proxy.port)
            c.login("demo", "demo")
            assert c.command("DELE 2").startswith(b"+OK")
            c.send(b"RETR 1\r\n")
            assert c.read_line().startswith(b"+OK")
            c.reset()  # mid-body
            _wait_closed(proxy, demo)
        assert demo.commands_seen == [b"CAPA", b"USER", b"PASS", b"DELE", b"RETR"]
        assert len(demo.users[b"demo"].messages) == 2
    finally:
        loop_thread.call(demo.stop())


@pytest.fixture
def two_user_demo(loop_thread: LoopThread) -> Iterator[DemoUpstream]:
    from popproxy.proxy.demo_upstream import Mailbox

    demo = DemoUpstream({b"a": Mailbox(b"pa"), b"b": Mailbox(b"pb", [SAMPLE_MESSAGES[2]])})
    loop_thread.call(demo.start())
    try:
        yield demo
    finally:
        loop_thread.call(demo.stop())


def test_concurrent_sessions_are_independent(two_user_demo: DemoUpstream,
                                             loop_thread: LoopThread) -> None:
    with running_proxy(make_config(two_user_demo.port), loop_thread) as proxy, \
            RawPOP3(proxy.port) as a, RawPOP3(proxy.port) as b:
        a.login("a", "pa")
        b.login("b", "pb")
        assert a.command("STAT") == DEMO_STAT
        assert b.command("STAT") == b"+OK 1 %d\r\n" % len(SAMPLE_MESSAGES[2])
        assert proxy.server.session_count == 2


def test_objects_an_idle_session_keeps_have_no_instance_dict() -> None:
    """Idle memory (issue 18 item 6): each lives as long as its connection, and a ``__dict__``
    costs about 100 bytes more per object than slots."""
    from popproxy.pop3.commands import CommandParser
    from popproxy.pop3.framing import ResponseFramer
    from popproxy.pop3.state import SessionState
    from popproxy.proxy.auth import AuthHandler
    from popproxy.proxy.deadlines import CoarseTimer
    from popproxy.proxy.relay import ClientWriter
    from popproxy.proxy.released import ReleasingMailbox
    from popproxy.proxy.session import Session
    from popproxy.proxy.socket_channel import SocketChannel
    from popproxy.proxy.upstream import UpstreamConnection

    kept = [Session, SocketChannel, ClientWriter, UpstreamConnection,
            AuthHandler, CommandParser, SessionState, ResponseFramer, ReleasingMailbox,
            CoarseTimer]
    assert [cls.__name__ for cls in kept if cls.__dictoffset__ != 0] == []
