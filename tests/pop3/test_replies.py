"""Replies the proxy writes itself (RFC 1939 s3, RFC 2449 s8, RFC 3206, RFC 5034)."""

from __future__ import annotations

import pytest

from popproxy.pop3 import limits, replies
from popproxy.pop3.events import BodyData, Command, EndOfBody, StatusLine
from popproxy.pop3.replies import Code
from tests.pop3.feeding import Feed, coalesce, feed_framer


def test_ok() -> None:
    assert replies.ok() == b"+OK\r\n"
    assert replies.ok("bye") == b"+OK bye\r\n"


def test_err() -> None:
    assert replies.err("no such message") == b"-ERR no such message\r\n"
    assert replies.err("") == b"-ERR\r\n"


@pytest.mark.parametrize(
    ("code", "wire"),
    [
        (Code.SYS_TEMP, b"-ERR [SYS/TEMP] try later\r\n"),
        (Code.SYS_PERM, b"-ERR [SYS/PERM] try later\r\n"),
        (Code.AUTH, b"-ERR [AUTH] try later\r\n"),
        (Code.IN_USE, b"-ERR [IN-USE] try later\r\n"),
        (Code.LOGIN_DELAY, b"-ERR [LOGIN-DELAY] try later\r\n"),
    ],
)
def test_err_with_response_code(code: Code, wire: bytes) -> None:
    assert replies.err("try later", code) == wire


@pytest.mark.parametrize("text", ["a\r\n+OK injected", "a\rb", "a\nb", "\r\n"])
def test_line_breaks_cannot_inject_a_second_response(text: str) -> None:
    for line in (replies.ok(text), replies.err(text), replies.err(text, Code.AUTH)):
        assert line.endswith(b"\r\n")
        assert b"\r" not in line[:-2] and b"\n" not in line[:-2]


def test_non_ascii_text_is_replaced() -> None:
    assert replies.err("Fehlgeschlagen: Jürgen") == b"-ERR Fehlgeschlagen: J?rgen\r\n"


@pytest.mark.parametrize("make", [replies.ok, replies.err])
def test_long_text_is_cut_to_the_status_line_limit(make: object) -> None:
    assert callable(make)
    line = make("x" * 2000)
    assert isinstance(line, bytes)
    assert len(line) == limits.MAX_STATUS_LINE
    assert line.endswith(b"x\r\n")


def test_long_text_with_code_keeps_the_code() -> None:
    line = replies.err("y" * 2000, Code.SYS_TEMP)
    assert len(line) == limits.MAX_STATUS_LINE
    assert line.startswith(b"-ERR [SYS/TEMP] yyy")


def test_continuation() -> None:
    assert replies.continuation() == b"+ \r\n"
    assert replies.continuation(b"VXNlcm5hbWU6") == b"+ VXNlcm5hbWU6\r\n"


def test_multiline() -> None:
    wire = replies.multiline(replies.ok("follow"), [b"PLAIN", b"LOGIN"])
    assert wire == b"+OK follow\r\nPLAIN\r\nLOGIN\r\n.\r\n"
    assert replies.multiline(replies.ok(), []) == b"+OK\r\n.\r\n"


def test_our_replies_frame_cleanly(feed: Feed) -> None:
    """Every status reply we write is what our own framer (and so any client) accepts.

    SASL continuations are not framed here: the framer reads the upstream, which the proxy
    never logs in to with AUTH (test_continuation checks their bytes).
    """
    wire = (
        replies.ok("greeting")
        + replies.err("x" * 2000, Code.SYS_TEMP)
        + replies.ok("in")
        + replies.multiline(replies.ok("mechanisms"), [b"PLAIN", b"LOGIN"])
        + replies.err("a\r\n+OK")
    )
    commands = (
        Command("NOOP"),
        Command("AUTH", (b"LOGIN",)),
        Command("AUTH"),
        Command("NOOP"),
    )
    events = coalesce(feed_framer(wire, feed, commands=commands))
    assert [type(e) for e in events] == [
        StatusLine,
        StatusLine,
        StatusLine,
        StatusLine,
        BodyData,
        EndOfBody,
        StatusLine,
    ]
    kinds = [e.kind for e in events if isinstance(e, StatusLine)]
    assert kinds == ["+OK", "-ERR", "+OK", "+OK", "-ERR"]
    assert events[4] == BodyData(b"PLAIN\r\nLOGIN\r\n")
