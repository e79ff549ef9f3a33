"""Session behaviour of the proxy in front of the in-process demo upstream.

``DemoUpstream.commands_seen`` records the verbs the upstream received, so these tests also
check what the proxy does NOT forward (APOP, bad arguments, QUIT on a dropped connection).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for

DEMO_STAT = b"+OK %d %d\r\n" % (len(SAMPLE_MESSAGES), sum(map(len, SAMPLE_MESSAGES)))


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _capa(reply: bytes) -> list[bytes]:
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK")
    assert lines[-2:] == [b".", b""]
    return lines[1:-2]


def _login_commands(demo: DemoUpstream) -> list[bytes]:
    """What reached the upstream, without the CAPA the proxy sends to learn PIPELINING."""
    return [c for c in demo.commands_seen if c != b"CAPA"]


def _wait_closed(proxy: RunningProxy) -> None:
    wait_for(lambda: proxy.server.session_count == 0, what="the proxy session to end")
    time.sleep(0.2)  # anything the proxy (wrongly) sent upstream on close has arrived by now


# ---------------------------------------------------------------------- greeting and CAPA
def test_greeting_does_not_leak_upstream_banner(demo_upstream: DemoUpstream,
                                                demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.greeting.startswith(b"+OK")
        assert b"demo" not in c.greeting.lower()
        assert b"<" not in c.greeting  # no APOP timestamp
        c.login("demo", "demo")  # the upstream is only contacted now
        assert c.command("NOOP") == b"+OK\r\n"
    assert _login_commands(demo_upstream)[:2] == [b"USER", b"PASS"]


def test_capa_before_login(demo_upstream: DemoUpstream, demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        caps = _capa(c.command("CAPA"))
    assert b"USER" in caps
    assert b"SASL PLAIN LOGIN" in caps
    assert {b"TOP", b"UIDL", b"PIPELINING", b"RESP-CODES"} <= set(caps)
    assert not [c for c in caps if c.startswith((b"IMPLEMENTATION", b"STLS"))]
    assert demo_upstream.commands_seen == []  # answered by the proxy itself


def test_capa_after_login_hides_login_and_implementation(demo_upstream: DemoUpstream,
                                                         demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.login("demo", "demo")
        caps = _capa(c.command("CAPA"))
    # The demo upstream says TOP, UIDL, USER, IMPLEMENTATION demo.
    assert caps == [b"TOP", b"UIDL"]
    assert demo_upstream.commands_seen[-1] == b"CAPA"


# ---------------------------------------------------------------------- USER / PASS / APOP
def test_user_pass_login_and_relay(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("USER demo").startswith(b"+OK")
        assert c.command("PASS demo") == b"+OK logged in\r\n"  # the upstream's own answer
        assert c.command("STAT") == DEMO_STAT
        assert c.command("RETR 2").endswith(b"\r\n..a line starting with a dot\r\n"
                                            b"...two dots\r\n..\r\nend\r\n.\r\n")
        assert c.command("QUIT").startswith(b"+OK")
        assert c.read_until_eof() == b""


# ---------------------------------------------------------------------- SASL
def test_auth_lists_mechanisms(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        reply = c.command("AUTH")
    assert reply.split(b"\r\n")[1:] == [b"PLAIN", b"LOGIN", b".", b""]


def test_auth_plain_with_initial_response(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(b"AUTH PLAIN " + _b64(b"\0demo\0demo")) == b"+OK logged in\r\n"
        assert c.command("STAT") == DEMO_STAT


@pytest.mark.parametrize("authzid", [b"", b"demo"])
def test_auth_plain_without_initial_response(demo_proxy: RunningProxy, authzid: bytes) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("auth plain") == b"+ \r\n"
        assert c.command(_b64(authzid + b"\0demo\0demo")) == b"+OK logged in\r\n"
        assert c.command("STAT") == DEMO_STAT


def test_auth_plain_other_authzid_refused(demo_upstream: DemoUpstream,
                                          demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(b"AUTH PLAIN " + _b64(b"admin\0demo\0demo")).startswith(b"-ERR")
        assert c.command("STAT").startswith(b"-ERR")
    assert demo_upstream.commands_seen == []  # refused before any upstream login


def test_auth_login(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("AUTH LOGIN") == b"+ " + _b64(b"Username:") + b"\r\n"
        assert c.command(_b64(b"demo")) == b"+ " + _b64(b"Password:") + b"\r\n"
        assert c.command(_b64(b"demo")) == b"+OK logged in\r\n"
        assert c.command("STAT") == DEMO_STAT


def test_auth_login_with_initial_response(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command(b"AUTH LOGIN " + _b64(b"demo")) == b"+ " + _b64(b"Password:") + b"\r\n"
        assert c.command(_b64(b"demo")) == b"+OK logged in\r\n"


def test_auth_pipelined_with_following_commands(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.send(b"AUTH PLAIN\r\n" + _b64(b"\0demo\0demo") + b"\r\nSTAT\r\nLIST 1\r\n")
        assert c.read_line() == b"+ \r\n"
        assert c.read_line() == b"+OK logged in\r\n"
        assert c.read_line() == DEMO_STAT
        assert c.read_line() == b"+OK 1 %d\r\n" % len(SAMPLE_MESSAGES[0])


@pytest.mark.parametrize(
    "steps",
    [
        [b"AUTH PLAIN"],
        [b"AUTH LOGIN"],
        [b"AUTH LOGIN", _b64(b"demo")],
    ],
    ids=["plain", "login-at-username", "login-at-password"],
)
def test_auth_cancel(demo_upstream: DemoUpstream, demo_proxy: RunningProxy,
                     steps: list[bytes]) -> None:
    with RawPOP3(demo_proxy.port) as c:
        for _ in range(4):  # cancelling is not a failed login: more than max_login_failures
            for step in steps:
                assert c.command(step).startswith(b"+ ")
            assert c.command("*").startswith(b"-ERR")
        assert c.command("STAT").startswith(b"-ERR")  # back in AUTHORIZATION, not logged in
        c.login("demo", "demo")
        assert c.command("STAT") == DEMO_STAT
    assert _login_commands(demo_upstream)[:2] == [b"USER", b"PASS"]


@pytest.mark.parametrize("line", [b"not base64!", b"AAA", b"\xff\xfe"])
def test_auth_invalid_base64(demo_proxy: RunningProxy, line: bytes) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("AUTH PLAIN") == b"+ \r\n"
        assert c.command(line).startswith(b"-ERR")
        c.login("demo", "demo")


@pytest.mark.parametrize(
    "payload",
    [
        b"\0demo\r\nDELE 1\0demo",  # CRLF in the user name
        b"\0demo\0demo\r\nDELE 1",  # CRLF in the password
        b"\0demo\nDELE 1\0demo",  # bare LF
        b"\0de mo\0demo",  # a space would split USER's argument
        b"\0demo\0" + b"p" * 250,  # "PASS " + password + CRLF > 255 octets
    ],
    ids=["crlf-user", "crlf-pass", "lf-user", "space-user", "long-pass"],
)
def test_sasl_credentials_cannot_inject_upstream_commands(
    demo_upstream: DemoUpstream, demo_proxy: RunningProxy, payload: bytes
) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("AUTH PLAIN") == b"+ \r\n"  # long: no initial response (RFC 5034)
        assert c.command(_b64(payload)).startswith(b"-ERR [AUTH]")
        assert c.command("AUTH LOGIN").startswith(b"+ ")
        user, _, password = payload[1:].partition(b"\0")
        assert c.command(_b64(user)).startswith(b"+ ")
        assert c.command(_b64(password)).startswith(b"-ERR [AUTH]")
    assert demo_upstream.commands_seen == []


def test_auth_unsupported_mechanism(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("AUTH CRAM-MD5").startswith(b"-ERR")
        assert c.command("AUTH GSSAPI").startswith(b"-ERR")
        c.login("demo", "demo")


def test_too_long_sasl_response_ends_the_exchange(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("AUTH PLAIN") == b"+ \r\n"
        assert c.command(b"A" * 9000).startswith(b"-ERR")  # RFC 5034 s4: the exchange failed
        # The client now believes it is back in AUTHORIZATION (it got -ERR), so:
        caps = _capa(c.command("CAPA"))
        assert b"USER" in caps


# ---------------------------------------------------------------------- failures and close
def test_wrong_password_relays_auth_code(demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("USER demo").startswith(b"+OK")
        assert c.command("PASS nope") == b"-ERR [AUTH] authentication failed\r\n"
        c.login("demo", "demo")


@pytest.mark.parametrize("max_failures", [1, 3])
def test_max_login_failures_closes_connection(demo_upstream: DemoUpstream,
                                              loop_thread: LoopThread, max_failures: int) -> None:
    config = make_config(demo_upstream.port, limits={"max_login_failures": max_failures})
    with running_proxy(config, loop_thread) as proxy, RawPOP3(proxy.port) as c:
        for _ in range(max_failures - 1):
            assert c.command("USER demo").startswith(b"+OK")
            assert c.command("PASS wrong").startswith(b"-ERR [AUTH]")
        # The last failure may come through any login path: here AUTH PLAIN.
        assert c.command(b"AUTH PLAIN " + _b64(b"\0demo\0wrong")).startswith(b"-ERR [AUTH]")
        rest = c.read_until_eof()
        assert rest.startswith(b"-ERR [AUTH]") and rest.count(b"\r\n") == 1


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_disconnect_sends_no_quit_upstream(demo_upstream: DemoUpstream,
                                                  demo_proxy: RunningProxy, how: str) -> None:
    c = RawPOP3(demo_proxy.port)
    c.login("demo", "demo")
    assert c.command("DELE 1").startswith(b"+OK")
    assert c.command("RETR 3").startswith(b"+OK")
    if how == "rst":
        c.reset()
    else:
        c.close()
    _wait_closed(demo_proxy)
    assert demo_upstream.commands_seen == [b"CAPA", b"USER", b"PASS", b"DELE", b"RETR"]
    with RawPOP3(demo_proxy.port) as c2:  # and so nothing was deleted
        c2.login("demo", "demo")
        assert c2.command("STAT") == DEMO_STAT


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
            _wait_closed(proxy)
        assert demo.commands_seen == [b"CAPA", b"USER", b"PASS", b"DELE", b"RETR"]
        assert len(demo.users[b"demo"].messages) == 2
    finally:
        loop_thread.call(demo.stop())


def test_half_close_after_pipelined_commands_gets_every_answer(
    demo_upstream: DemoUpstream, demo_proxy: RunningProxy
) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.send_and_shutdown(b"USER demo\r\nPASS demo\r\nSTAT\r\nQUIT\r\n")
        answers = c.read_until_eof()
    _wait_closed(demo_proxy)
    assert demo_upstream.commands_seen == [b"CAPA", b"USER", b"PASS", b"STAT", b"QUIT"]
    assert answers == b"+OK send PASS\r\n+OK logged in\r\n" + DEMO_STAT + b"+OK bye\r\n"


def test_quit_is_relayed_and_commits(demo_upstream: DemoUpstream,
                                     demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        c.login("demo", "demo")
        assert c.command("DELE 1").startswith(b"+OK")
        assert c.command("QUIT") == b"+OK bye\r\n"
        assert c.read_until_eof() == b""
    assert demo_upstream.commands_seen[-1] == b"QUIT"
    assert demo_upstream.users[b"demo"].messages == list(SAMPLE_MESSAGES[1:])


def test_quit_before_login_never_contacts_upstream(demo_upstream: DemoUpstream,
                                                   demo_proxy: RunningProxy) -> None:
    with RawPOP3(demo_proxy.port) as c:
        assert c.command("USER demo").startswith(b"+OK")
        assert c.command("QUIT").startswith(b"+OK")
        assert c.read_until_eof() == b""
    assert demo_upstream.commands_seen == []


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
