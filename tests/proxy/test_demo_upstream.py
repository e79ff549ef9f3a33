"""The demo upstream (the server most proxy tests run against) behaves like a POP3 server:
checked here with the standard library's poplib, straight to it, with no proxy between."""

from __future__ import annotations

import poplib

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream, Mailbox
from tests.helpers import LoopThread, running_demo


def _login(demo: DemoUpstream, user: str = "demo", password: str = "demo") -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", demo.port, timeout=5)
    client.user(user)
    client.pass_(password)
    return client


def test_retr_unstuffs_to_the_sample_message(demo_upstream: DemoUpstream) -> None:
    client = _login(demo_upstream)
    assert client.stat() == (3, sum(map(len, SAMPLE_MESSAGES)))
    _, lines, _ = client.retr(2)  # the message whose lines start with dots
    assert b"\r\n".join(lines) + b"\r\n" == SAMPLE_MESSAGES[1]
    client.quit()


def test_top_keeps_the_header_and_n_body_lines(demo_upstream: DemoUpstream) -> None:
    client = _login(demo_upstream)
    _, lines, _ = client.top(2, 1)
    assert lines[-2:] == [b"", b".a line starting with a dot"]
    client.quit()


def test_dele_is_committed_only_at_quit(demo_upstream: DemoUpstream) -> None:
    client = _login(demo_upstream)
    client.dele(1)
    assert client.stat()[0] == 2
    client.rset()
    client.dele(3)
    client.close()  # no QUIT: RFC 1939 section 6, nothing is removed
    again = _login(demo_upstream)
    assert again.stat()[0] == 3
    again.dele(3)
    again.quit()
    assert demo_upstream.users[b"demo"].messages == list(SAMPLE_MESSAGES[:2])


def test_wrong_password_and_unknown_commands(demo_upstream: DemoUpstream) -> None:
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        _login(demo_upstream, password="wrong")
    client = _login(demo_upstream)
    with pytest.raises(poplib.error_proto, match="no such message"):
        client.retr(9)
    client.quit()
    assert b"PASS" in demo_upstream.commands_seen and b"RETR" in demo_upstream.commands_seen


def test_capa_and_fixed_uidls(loop_thread: LoopThread) -> None:
    box = Mailbox(b"pw", [b"Subject: a\r\n\r\nx\r\n"], uidls=[b"reused-1"])
    demo = DemoUpstream({b"u": box}, pipelining=True)
    with running_demo(loop_thread, demo):
        client = _login(demo, "u", "pw")
        assert "PIPELINING" in client.capa()
        assert client.uidl(1) == b"+OK 1 reused-1"
        client.quit()
