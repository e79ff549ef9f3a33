"""ResponseFramer, Stuffer and Unstuffer (RFC 1939 section 3 multi-line responses)."""

from __future__ import annotations

import itertools

import pytest

from popproxy.pop3 import limits
from popproxy.pop3.errors import RemoteProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BodyData,
    Command,
    ConnectionClosed,
    EndOfBody,
    ServerEvent,
    StatusLine,
)
from popproxy.pop3.framing import (
    TERMINATOR,
    ResponseFramer,
    Stuffer,
    Unstuffer,
    expects_multiline,
    stuff_body,
)
from tests.pop3.feeding import (
    FEEDS,
    Feed,
    body_bytes,
    bytewise,
    coalesce,
    drain_framer,
    feed_framer,
    split_at,
    whole,
)

GREETING = b"+OK POP3 ready <1.2@example>\r\n"
GREETING_EVENT = StatusLine("+OK", GREETING, multiline=False)
RETR = Command("RETR", (b"1",))

# A body with every dot-stuffing case: a stuffed first line, a stuffed "." line, a stuffed
# line that would otherwise look like the terminator, an empty line and a dot that is not at a
# line start.
STUFFED_BODY = b"..first line starts with a dot\r\nSubject: x.y\r\n\r\n..\r\n...\r\na.\r\nlast\r\n"


def ok(text: bytes = b"") -> bytes:
    return b"+OK" + (b" " + text if text else b"") + b"\r\n"


def status(raw: bytes, multiline: bool = False) -> StatusLine:
    kind = "-ERR" if raw.startswith(b"-ERR") else "+" if raw.startswith(b"+ ") else "+OK"
    return StatusLine(kind, raw, multiline)


def framed(
    data: bytes, feed: Feed, commands: tuple[Command, ...] = (), eof: bool = False
) -> list[ServerEvent]:
    """Coalesced events for ``data`` (greeting included) after pipelining ``commands``."""
    return coalesce(feed_framer(GREETING + data, feed, commands=commands, eof=eof))


# ------------------------------------------------------------------ greeting, single lines


def test_greeting_is_the_first_expected_response(feed: Feed) -> None:
    framer = ResponseFramer()
    assert feed_framer(GREETING, feed, framer=framer) == [GREETING_EVENT]
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        feed_framer(ok(), feed, framer=framer)


def test_negative_greeting(feed: Feed) -> None:
    raw = b"-ERR [SYS/TEMP] overloaded\r\n"
    [event] = feed_framer(raw, feed)
    assert event == StatusLine("-ERR", raw, multiline=False)
    assert not event.ok
    assert event.text == b"[SYS/TEMP] overloaded"


def test_greeting_with_bare_lf_and_no_text(feed: Feed) -> None:
    assert feed_framer(b"+OK\n", feed) == [StatusLine("+OK", b"+OK\n", multiline=False)]


def test_nothing_before_the_line_end() -> None:
    framer = ResponseFramer()
    framer.receive_data(GREETING[:-1])
    assert framer.next_event() is NEED_DATA
    framer.receive_data(GREETING[-1:])
    assert framer.next_event() == GREETING_EVENT
    assert framer.next_event() is NEED_DATA


@pytest.mark.parametrize(
    "cmd",
    [
        Command("USER", (b"bob",)),
        Command("PASS", (b"secret",)),
        Command("STAT"),
        Command("LIST", (b"1",)),
        Command("UIDL", (b"1",)),
        Command("DELE", (b"1",)),
        Command("NOOP"),
        Command("RSET"),
        Command("QUIT"),
        Command("STLS"),
        Command("APOP", (b"bob", b"c4c9334bac560ecc979e58001b3e22fb")),
    ],
)
def test_single_line_responses(feed: Feed, cmd: Command) -> None:
    assert not expects_multiline(cmd)
    raw = ok(b"2 320")
    assert framed(raw, feed, (cmd,)) == [GREETING_EVENT, StatusLine("+OK", raw, False)]


def test_status_line_properties() -> None:
    line = StatusLine("+OK", b"+OK 2 320\r\n", multiline=False)
    assert line.ok
    assert line.text == b"2 320"
    assert not StatusLine("-ERR", b"-ERR no\r\n", False).ok
    assert StatusLine("+", b"+ VXNlcm5hbWU6\r\n", False).text == b"VXNlcm5hbWU6"


# ------------------------------------------------------------------ multi-line responses

MULTILINE_COMMANDS = [
    Command("CAPA"),
    Command("LIST"),
    Command("UIDL"),
    Command("RETR", (b"1",)),
    Command("TOP", (b"1", b"0")),
    Command("AUTH"),
]


@pytest.mark.parametrize("cmd", MULTILINE_COMMANDS, ids=lambda c: c.render().decode().strip())
def test_multiline_responses(feed: Feed, cmd: Command) -> None:
    assert expects_multiline(cmd)
    raw = ok(b"follows")
    body = b"line one\r\nline two\r\n"
    assert framed(raw + body + b".\r\n", feed, (cmd,)) == [
        GREETING_EVENT,
        StatusLine("+OK", raw, multiline=True),
        BodyData(body),
        EndOfBody(),
    ]


@pytest.mark.parametrize(
    ("cmd", "multiline"),
    [
        (Command("CAPA"), True),
        (Command("RETR", (b"1",)), True),
        (Command("TOP", (b"1", b"5")), True),
        (Command("LIST"), True),
        (Command("LIST", (b"1",)), False),
        (Command("UIDL"), True),
        (Command("UIDL", (b"1",)), False),
        (Command("AUTH"), True),
        (Command("AUTH", (b"PLAIN",)), False),
        (Command("AUTH", (b"PLAIN", b"AGEAYg==")), False),
        (Command("STAT"), False),
        (Command("USER", (b"x",)), False),
    ],
)
def test_expects_multiline(cmd: Command, multiline: bool) -> None:
    assert expects_multiline(cmd) is multiline


@pytest.mark.parametrize("cmd", MULTILINE_COMMANDS, ids=lambda c: c.render().decode().strip())
def test_err_to_a_multiline_command_has_no_body(feed: Feed, cmd: Command) -> None:
    err = b"-ERR no such message\r\n"
    # The next response (to NOOP) must be framed as a status line, not as a body.
    events = framed(err + ok(b"noop"), feed, (cmd, Command("NOOP")))
    assert events == [
        GREETING_EVENT,
        StatusLine("-ERR", err, multiline=False),
        StatusLine("+OK", ok(b"noop"), multiline=False),
    ]


def test_dot_stuffed_lines_pass_through_still_stuffed(feed: Feed) -> None:
    wire = ok(b"message follows") + STUFFED_BODY + b".\r\n"
    events = framed(wire, feed, (RETR,))
    assert events == [
        GREETING_EVENT,
        StatusLine("+OK", ok(b"message follows"), multiline=True),
        BodyData(STUFFED_BODY),
        EndOfBody(),
    ]


def test_body_data_is_exactly_the_wire_bytes(feed: Feed) -> None:
    # Nothing is normalised: bare CR, bare LF, NUL and 8-bit bytes go through untouched.
    body = b"a\rb\nc\0d\xff\r\n\n.\r\n\r\r\n.x\r\n"
    assert TERMINATOR not in b"\r\n" + body[:-2]  # a legal (already stuffed) body
    events = framed(ok() + body + b".\r\n", feed, (RETR,))
    assert body_bytes(events) == body
    assert events[-1] == EndOfBody()


def test_empty_body(feed: Feed) -> None:
    events = framed(ok() + b".\r\n" + ok(), feed, (Command("LIST"), Command("NOOP")))
    assert events == [
        GREETING_EVENT,
        StatusLine("+OK", ok(), multiline=True),
        EndOfBody(),
        StatusLine("+OK", ok(), multiline=False),
    ]


def test_body_of_one_empty_line(feed: Feed) -> None:
    events = framed(ok() + b"\r\n.\r\n", feed, (RETR,))
    assert events == [GREETING_EVENT, StatusLine("+OK", ok(), True), BodyData(b"\r\n"), EndOfBody()]


def test_body_of_only_a_stuffed_dot_line(feed: Feed) -> None:
    events = framed(ok() + b"..\r\n.\r\n", feed, (RETR,))
    assert events == [
        GREETING_EVENT,
        StatusLine("+OK", ok(), True),
        BodyData(b"..\r\n"),
        EndOfBody(),
    ]


def test_pipelined_responses_back_to_back(feed: Feed) -> None:
    commands = (
        Command("STAT"),
        Command("LIST"),
        Command("RETR", (b"1",)),
        Command("RETR", (b"9",)),
        Command("UIDL"),
        Command("TOP", (b"1", b"0")),
        Command("NOOP"),
    )
    wire = (
        ok(b"2 320")
        + ok(b"2 messages")
        + b"1 120\r\n2 200\r\n.\r\n"
        + ok(b"120 octets")
        + STUFFED_BODY
        + b".\r\n"
        + b"-ERR no such message\r\n"
        + ok()
        + b".\r\n"
        + ok()
        + b"Subject: hi\r\n\r\n.\r\n"
        + ok()
    )
    framer = ResponseFramer()
    events = coalesce(feed_framer(GREETING + wire, feed, commands=commands, framer=framer))
    assert events == [
        GREETING_EVENT,
        StatusLine("+OK", ok(b"2 320"), False),
        StatusLine("+OK", ok(b"2 messages"), True),
        BodyData(b"1 120\r\n2 200\r\n"),
        EndOfBody(),
        StatusLine("+OK", ok(b"120 octets"), True),
        BodyData(STUFFED_BODY),
        EndOfBody(),
        StatusLine("-ERR", b"-ERR no such message\r\n", False),
        StatusLine("+OK", ok(), True),
        EndOfBody(),
        StatusLine("+OK", ok(), True),
        BodyData(b"Subject: hi\r\n\r\n"),
        EndOfBody(),
        StatusLine("+OK", ok(), False),
    ]
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        feed_framer(ok(), feed, framer=framer)


def test_whole_and_bytewise_give_the_same_events() -> None:
    wire = GREETING + ok() + STUFFED_BODY + b".\r\n" + ok()
    commands = (Command("RETR", (b"1",)), Command("NOOP"))
    results = [coalesce(feed_framer(wire, f, commands=commands)) for f in FEEDS]
    assert all(r == results[0] for r in results)
    # Uncoalesced, whole feeding gives one BodyData; byte-at-a-time slices it but loses nothing.
    assert len(feed_framer(wire, whole, commands=commands)) == 5
    assert body_bytes(feed_framer(wire, bytewise, commands=commands)) == STUFFED_BODY


# ------------------------------------------------------------------ chunk boundaries


def _retr_wire() -> tuple[bytes, list[ServerEvent]]:
    body = b"x\r\n.\r\n".replace(b"\r\n.", b"\r\n..") + b"\r\n"  # "x", "..", ""
    wire = GREETING + ok() + body + b".\r\n" + ok(b"next")
    expected: list[ServerEvent] = [
        GREETING_EVENT,
        StatusLine("+OK", ok(), True),
        BodyData(body),
        EndOfBody(),
        StatusLine("+OK", ok(b"next"), False),
    ]
    return wire, expected


def test_every_single_split_position() -> None:
    wire, expected = _retr_wire()
    commands = (Command("RETR", (b"1",)), Command("NOOP"))
    for pos in range(1, len(wire)):
        events = coalesce(feed_framer(wire, split_at(pos), commands=commands))
        assert events == expected, pos


def test_every_pair_of_split_positions_around_the_terminator() -> None:
    wire, expected = _retr_wire()
    commands = (Command("RETR", (b"1",)), Command("NOOP"))
    start = wire.index(b"x\r\n")
    region = range(start, wire.index(b"+OK next") + 2)
    for a, b in itertools.combinations(region, 2):
        events = coalesce(feed_framer(wire, split_at(a, b), commands=commands))
        assert events == expected, (a, b)


@pytest.mark.parametrize("cut", range(1, len(TERMINATOR)))
def test_terminator_split_at_each_position_holds_back_nothing_wrong(cut: int) -> None:
    framer = ResponseFramer()
    framer.send_command(Command("RETR", (b"1",)))
    framer.receive_data(GREETING + ok() + b"body" + TERMINATOR[:cut])
    events = drain_framer(framer)
    assert events == [GREETING_EVENT, StatusLine("+OK", ok(), True), BodyData(b"body")]
    framer.receive_data(TERMINATOR[cut:])
    assert drain_framer(framer) == [BodyData(b"\r\n"), EndOfBody()]


def test_empty_body_terminator_split_at_each_position() -> None:
    for cut in range(1, 3):
        framer = ResponseFramer()
        framer.send_command(Command("LIST"))
        framer.receive_data(GREETING + ok() + b".\r\n"[:cut])
        assert drain_framer(framer) == [GREETING_EVENT, StatusLine("+OK", ok(), True)]
        framer.receive_data(b".\r\n"[cut:])
        assert drain_framer(framer) == [EndOfBody()]


def test_body_streams_before_the_terminator_arrives() -> None:
    framer = ResponseFramer()
    framer.send_command(Command("RETR", (b"1",)))
    framer.receive_data(GREETING + ok() + b"part one\r\npart")
    events = drain_framer(framer)
    assert events[-1] == BodyData(b"part one\r\npart")
    framer.receive_data(b" two\r\n")
    assert drain_framer(framer) == [BodyData(b" two")]  # CRLF held back: may start ".CRLF"
    framer.receive_data(b"..\r\n")
    assert drain_framer(framer) == [BodyData(b"\r\n..")]


# ------------------------------------------------------------------ status line limits


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_512_octet_status_line_is_accepted(feed: Feed, end: bytes) -> None:
    raw = b"+OK " + b"x" * (limits.MAX_STATUS_LINE - 4 - len(end)) + end
    assert len(raw) == limits.MAX_STATUS_LINE
    assert feed_framer(raw, feed) == [StatusLine("+OK", raw, False)]


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b""])
def test_513_octet_status_line_is_refused(feed: Feed, end: bytes) -> None:
    raw = b"+OK " + b"x" * (limits.MAX_STATUS_LINE + 1 - 4 - len(end)) + end
    with pytest.raises(RemoteProtocolError, match="longer than 512"):
        feed_framer(raw, feed)


def test_over_long_status_line_after_a_good_one(feed: Feed) -> None:
    raw = b"-ERR " + b"y" * 600 + b"\r\n"
    framer = ResponseFramer()
    framer.send_command(Command("NOOP"))
    with pytest.raises(RemoteProtocolError):
        feed_framer(GREETING + raw, feed, framer=framer)


# ------------------------------------------------------------------ SASL continuations


@pytest.mark.parametrize(
    "commands",
    [
        (),  # the greeting itself
        (Command("NOOP"),),
        (Command("AUTH"),),  # bare AUTH lists mechanisms: no exchange
        # The proxy never logs in upstream with AUTH (proxy/auth.py), so even after an AUTH
        # with a mechanism a continuation is not owed to it.
        (Command("AUTH", (b"PLAIN",)),),
        (Command("USER", (b"bob",)),),
    ],
)
@pytest.mark.parametrize("line", [b"+ \r\n", b"+\r\n", b"+ Zm9v\r\n"])
def test_continuation_is_an_error(
    feed: Feed, commands: tuple[Command, ...], line: bytes
) -> None:
    data = line if not commands else GREETING + line
    with pytest.raises(RemoteProtocolError, match="continuation"):
        feed_framer(data, feed, commands=commands)


def test_send_command_returns_the_rendered_line() -> None:
    framer = ResponseFramer()
    assert framer.send_command(Command("TOP", (b"1", b"0"))) == b"TOP 1 0\r\n"
    assert framer.send_command(Command("PASS", (b"a b",))) == b"PASS a b\r\n"


# ------------------------------------------------------------------ protocol violations


def test_unsolicited_response(feed: Feed) -> None:
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        feed_framer(GREETING + b"+OK surprise\r\n", feed)


def test_unsolicited_response_after_a_body(feed: Feed) -> None:
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        feed_framer(GREETING + ok() + b".\r\n-ERR\r\n", feed, commands=(Command("LIST"),))


@pytest.mark.parametrize(
    "line", [b"HELLO\r\n", b"+OKAY\r\n", b"-ERROR\r\n", b"OK\r\n", b"\r\n", b"+-\r\n", b" +OK\r\n"]
)
def test_status_line_that_is_neither_ok_nor_err(feed: Feed, line: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        feed_framer(GREETING + line, feed, commands=(Command("NOOP"),))


@pytest.mark.parametrize("line", [b"+OK\r\n", b"+OK\n", b"-ERR\r\n", b"-ERR\n", b"+OK  x\r\n"])
def test_minimal_status_lines(feed: Feed, line: bytes) -> None:
    [event] = feed_framer(line, feed)
    assert isinstance(event, StatusLine)
    assert event.raw == line


def test_tab_after_the_indicator_is_not_a_status_line(feed: Feed) -> None:
    # RFC 1939 section 3: the indicator is followed by SP (or ends the line).
    with pytest.raises(RemoteProtocolError):
        feed_framer(b"+OK\tx\r\n", feed)


def test_eof_mid_body(feed: Feed) -> None:
    with pytest.raises(RemoteProtocolError, match="multi-line"):
        feed_framer(GREETING + ok() + b"half a me", feed, commands=(RETR,), eof=True)


@pytest.mark.parametrize("tail", [b"", b"x\r\n", b"x\r\n.", b"x\r\n.\r", b".", b".\r"])
def test_eof_before_the_terminator_completes(feed: Feed, tail: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        feed_framer(GREETING + ok() + tail, feed, commands=(RETR,), eof=True)


def test_eof_mid_status_line(feed: Feed) -> None:
    with pytest.raises(RemoteProtocolError, match="closed inside a status line"):
        feed_framer(b"+OK hel", feed, eof=True)


def test_eof_between_responses_is_connection_closed(feed: Feed) -> None:
    framer = ResponseFramer()
    events = feed_framer(GREETING, feed, framer=framer, eof=True)
    assert events == [GREETING_EVENT, ConnectionClosed()]
    assert framer.next_event() == ConnectionClosed()


def test_eof_right_after_the_terminator(feed: Feed) -> None:
    events = framed(ok() + b"a\r\n.\r\n", feed, (RETR,), eof=True)
    assert events[-2:] == [EndOfBody(), ConnectionClosed()]


def test_eof_while_a_response_is_still_owed(feed: Feed) -> None:
    # Whether the missing answer matters is the caller's call: the framer reports the close.
    framer = ResponseFramer()
    framer.send_command(Command("NOOP"))
    events = feed_framer(GREETING, feed, framer=framer, eof=True)
    assert events == [GREETING_EVENT, ConnectionClosed()]


# ------------------------------------------------------------------ owed responses


def test_only_owed_responses_are_framed() -> None:
    framer = ResponseFramer()
    framer.send_command(Command("RETR", (b"1",)))
    framer.send_command(Command("NOOP"))
    framer.receive_data(GREETING + ok() + b"abc")
    assert framer.next_event() == GREETING_EVENT
    assert framer.next_event() == StatusLine("+OK", ok(), True)
    assert framer.next_event() == BodyData(b"abc")
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"\r\n.\r\n")
    assert framer.next_event() == BodyData(b"\r\n")
    assert framer.next_event() == EndOfBody()
    framer.receive_data(ok())
    assert framer.next_event() == StatusLine("+OK", ok(), False)
    assert framer.next_event() is NEED_DATA
    framer.receive_data(ok())
    with pytest.raises(RemoteProtocolError, match="unsolicited"):
        framer.next_event()


# ------------------------------------------------------------------ Stuffer


@pytest.mark.parametrize(
    ("content", "wire"),
    [
        (b"", b".\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"abc", b"abc\r\n.\r\n"),
        (b"abc\r\n", b"abc\r\n.\r\n"),
        (b"\r\n", b"\r\n.\r\n"),
        (b".a\r\n.b\r\n", b"..a\r\n..b\r\n.\r\n"),
        (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..", b"a\r\n...\r\n.\r\n"),
        (b"a.b\r\n", b"a.b\r\n.\r\n"),
        (b"a\n.b", b"a\n.b\r\n.\r\n"),  # lines end with CRLF; after a bare LF is no line start
        (b"a\r", b"a\r\r\n.\r\n"),
    ],
)
def test_stuff_body(content: bytes, wire: bytes) -> None:
    assert stuff_body(content) == wire


def test_stuffer_first_line_dot() -> None:
    stuffer = Stuffer()
    assert stuffer.feed(b".hidden") == b"..hidden"
    assert stuffer.finish() == b"\r\n.\r\n"


def test_stuffer_dot_right_after_a_chunk_boundary() -> None:
    stuffer = Stuffer()
    assert stuffer.feed(b"a\r\n") == b"a\r\n"
    assert stuffer.feed(b".b") == b"..b"
    stuffer = Stuffer()
    assert stuffer.feed(b"a\r") == b"a\r"
    assert stuffer.feed(b"\n.b") == b"\n..b"
    stuffer = Stuffer()
    assert stuffer.feed(b"a\r") + stuffer.feed(b"") + stuffer.feed(b"\n") == b"a\r\n"
    assert stuffer.feed(b".") == b".."
    assert stuffer.finish() == b"\r\n.\r\n"


def test_stuffer_cr_then_other_byte_is_no_line_end() -> None:
    stuffer = Stuffer()
    assert stuffer.feed(b"a\r") + stuffer.feed(b"x\n.") == b"a\rx\n."


def test_stuffer_finish_adds_crlf_only_when_missing() -> None:
    for chunks, finish in [
        ([b"x\r\n"], b".\r\n"),
        ([b"x\r", b"\n"], b".\r\n"),
        ([b"x"], b"\r\n.\r\n"),
        ([b"x\r"], b"\r\n.\r\n"),
        ([b"x\n"], b"\r\n.\r\n"),
        ([], b".\r\n"),
        ([b""], b".\r\n"),
    ]:
        stuffer = Stuffer()
        for chunk in chunks:
            stuffer.feed(chunk)
        assert stuffer.finish() == finish, chunks


SAMPLE = b".a\r\n..\r\n\r\n.\r\nx.\r\r\n.\n.\r\n"


def _pieces(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_stuffer_every_split_point() -> None:
    expected = stuff_body(SAMPLE)
    for cuts in itertools.combinations(range(1, len(SAMPLE)), 2):
        stuffer = Stuffer()
        out = b"".join(stuffer.feed(p) for p in _pieces(SAMPLE, cuts)) + stuffer.finish()
        assert out == expected, cuts


# ------------------------------------------------------------------ Unstuffer


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b"", b""),
        (b"..a\r\n", b".a\r\n"),
        (b"..\r\n", b".\r\n"),
        (b"a\r\n..b\r\n...\r\n", b"a\r\n.b\r\n..\r\n"),
        (b"a.b\r\n", b"a.b\r\n"),
        (b"a\n..b", b"a\n..b"),  # not a line start
    ],
)
def test_unstuffer(wire: bytes, content: bytes) -> None:
    assert Unstuffer().feed(wire) == content


def test_unstuffer_every_split_point() -> None:
    stuffed = stuff_body(SAMPLE)[: -len(b".\r\n")]
    for cuts in itertools.combinations_with_replacement(range(len(stuffed) + 1), 2):
        unstuffer = Unstuffer()
        out = b"".join(unstuffer.feed(p) for p in _pieces(stuffed, cuts))
        assert out == SAMPLE, cuts


def test_unstuffer_dot_right_after_a_chunk_boundary() -> None:
    unstuffer = Unstuffer()
    assert unstuffer.feed(b"..x\r") == b".x\r"
    assert unstuffer.feed(b"\n") == b"\n"
    assert unstuffer.feed(b".") == b""
    assert unstuffer.feed(b".y") == b".y"


def test_unstuff_framed_body_bytewise() -> None:
    content = b".line1\r\n..\r\nend"
    wire = GREETING + ok() + stuff_body(content)
    unstuffer = Unstuffer()
    out = b""
    for event in feed_framer(wire, bytewise, commands=(RETR,)):
        if isinstance(event, BodyData):
            out += unstuffer.feed(event.data)
    assert out == content + b"\r\n"


def test_buffered_reports_unframed_bytes() -> None:
    # Used before an upstream STLS (RFC 2595 s4): bytes after the STLS answer must not exist.
    framer = ResponseFramer()
    framer.send_command(Command("STLS"))
    framer.receive_data(GREETING + ok(b"begin TLS"))
    assert drain_framer(framer)[-1] == StatusLine("+OK", ok(b"begin TLS"), False)
    assert framer.buffered() == 0
    framer.send_command(Command("NOOP"))
    framer.receive_data(ok() + b"+OK injected\r\n")
    assert framer.next_event() == StatusLine("+OK", ok(), False)
    assert framer.buffered() == len(b"+OK injected\r\n")


# ------------------------------------------------------------------ whole_body


def _bodies_as_upstream_reads_listings(wire: bytes, feed: Feed, commands: tuple[Command, ...]
                                       ) -> tuple[list[bytes], int]:
    """Each multi-line body read as upstream.py reads a listing: ``whole_body`` right after its
    status line, else its events; the bodies and how many came whole."""
    framer, bodies, whole_count = ResponseFramer(), list[bytes](), 0
    for cmd in commands:
        framer.send_command(cmd)
    for chunk in feed(wire):
        framer.receive_data(chunk)
        while not isinstance(event := framer.next_event(), type(NEED_DATA)):
            if isinstance(event, BodyData):
                bodies[-1] += event.data
            elif isinstance(event, StatusLine) and event.multiline:
                body = framer.whole_body()
                whole_count += body is not None
                bodies.append(body or b"")
    return bodies, whole_count


def test_whole_body_is_the_bytes_of_the_body_events(feed: Feed) -> None:
    bodies = [b"1 120\r\n2 200\r\n", STUFFED_BODY, b"", b"\r\n", b"..\r\n"]
    commands = (*(Command("UIDL") for _ in bodies), Command("NOOP"))
    wire = GREETING + b"".join(ok() + body + b".\r\n" for body in bodies) + ok(b"done")
    got, whole_count = _bodies_as_upstream_reads_listings(wire, feed, commands)
    assert got == bodies
    if feed is whole:  # all received at once: every body in one piece
        assert whole_count == len(bodies)


def test_whole_body_is_none_outside_a_fresh_body() -> None:
    framer = ResponseFramer()
    framer.send_command(Command("UIDL"))
    assert framer.whole_body() is None  # the greeting is owed: not in a body
    framer.receive_data(GREETING + ok() + b"1 a\r\n2 b")
    assert framer.next_event() == GREETING_EVENT
    assert framer.next_event() == StatusLine("+OK", ok(), True)
    assert framer.whole_body() is None  # the terminator has not arrived
    assert framer.next_event() == BodyData(b"1 a\r\n2 b")
    framer.receive_data(b"\r\n.\r\n")
    assert framer.whole_body() is None  # partly read as events: the events go on
    assert framer.next_event() == BodyData(b"\r\n")
    assert framer.next_event() == EndOfBody()
