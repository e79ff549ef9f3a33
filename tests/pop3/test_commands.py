"""CommandParser: client lines to Command / BadCommand / SaslResponse events (RFC 1939 s3)."""

from __future__ import annotations

import pytest

from popproxy.pop3 import limits
from popproxy.pop3.commands import (
    MAX_NUMBER_DIGITS,
    CommandParser,
    parse_command_line,
    valid_transaction_args,
)
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    BadLine,
    ClientEvent,
    Command,
    ConnectionClosed,
    SaslResponse,
)
from popproxy.pop3.state import ALLOWED_VERBS, State
from popproxy.pop3.verbs import VERBS
from tests.pop3.feeding import (
    FEEDS,
    Feed,
    auth_switches_sasl,
    bytewise,
    chunks_join,
    drain_parser,
    enter_sasl,
    feed_parser,
    leave_sasl,
    whole,
)

TOO_LONG = BadCommand(BadLine.TOO_LONG)
NUL_BYTE = BadCommand(BadLine.NUL_BYTE)
BAD_VERB = BadCommand(BadLine.BAD_VERB)
EMPTY = BadCommand(BadLine.EMPTY)
BAD_SYNTAX = BadCommand(BadLine.BAD_SYNTAX)


def user_line(total: int, end: bytes = b"\r\n") -> bytes:
    """A ``USER aaa...`` line of exactly ``total`` octets including its line end."""
    line = b"USER " + b"a" * (total - 5 - len(end)) + end
    assert len(line) == total
    return line


# ------------------------------------------------------------------ the feeds themselves


@pytest.mark.parametrize("data", [b"", b"x", b"NOOP\r\n", bytes(range(256)) * 3])
def test_feeds_keep_every_byte_in_order(data: bytes) -> None:
    for feed in FEEDS:
        assert chunks_join(feed, data) == data
        assert all(feed(data))  # no empty chunk: that would mean EOF


def test_bytewise_really_is_one_byte_at_a_time() -> None:
    assert bytewise(b"abc") == [b"a", b"b", b"c"]
    assert whole(b"abc") == [b"abc"]


# ------------------------------------------------------------------ well-formed commands


def test_single_command(feed: Feed) -> None:
    assert feed_parser(b"NOOP\r\n", feed) == [Command("NOOP")]


def test_nothing_before_the_line_end(feed: Feed) -> None:
    parser = CommandParser()
    assert feed_parser(b"NOOP\r", feed, parser=parser) == []
    assert parser.buffered() == 5
    assert feed_parser(b"\n", feed, parser=parser) == [Command("NOOP")]
    assert parser.buffered() == 0


@pytest.mark.parametrize("verb", [b"noop", b"NOOP", b"NoOp", b"nOOp"])
def test_verbs_are_case_insensitive(feed: Feed, verb: bytes) -> None:
    assert feed_parser(verb + b"\r\n", feed) == [Command("NOOP")]


def test_arguments_keep_their_case(feed: Feed) -> None:
    assert feed_parser(b"user Alice.Smith\r\n", feed) == [Command("USER", (b"Alice.Smith",))]


def test_arguments_are_split_on_single_spaces(feed: Feed) -> None:
    assert feed_parser(b"top 12 0\r\n", feed) == [Command("TOP", (b"12", b"0"))]


def test_pipelined_commands_in_one_chunk(feed: Feed) -> None:
    data = b"USER bob\r\nPASS s3cret\r\nSTAT\r\nLIST 1\r\nretr 2\r\nQUIT\r\n"
    assert feed_parser(data, feed) == [
        Command("USER", (b"bob",)),
        Command("PASS", (b"s3cret",)),
        Command("STAT"),
        Command("LIST", (b"1",)),
        Command("RETR", (b"2",)),
        Command("QUIT"),
    ]


def test_pipelined_commands_with_a_partial_tail() -> None:
    parser = CommandParser()
    parser.receive_data(b"STAT\r\nNOOP\r\nLI")
    assert drain_parser(parser) == [Command("STAT"), Command("NOOP")]
    assert parser.buffered() == 2
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"ST\r\n")
    assert drain_parser(parser) == [Command("LIST")]


def test_bare_lf_ends_a_line(feed: Feed) -> None:
    # Documented: a bare LF is accepted (hand-typed sessions); the upstream only ever sees the
    # re-rendered CRLF form.
    events = feed_parser(b"NOOP\nUSER bob\nSTAT\r\n", feed)
    assert events == [Command("NOOP"), Command("USER", (b"bob",)), Command("STAT")]
    assert [e.render() for e in events if isinstance(e, Command)] == [
        b"NOOP\r\n",
        b"USER bob\r\n",
        b"STAT\r\n",
    ]


def test_pass_keeps_spaces_in_the_password(feed: Feed) -> None:
    assert feed_parser(b"PASS  my secret  pass \r\n", feed) == [
        Command("PASS", (b" my secret  pass ",))
    ]
    assert feed_parser(b"pass a b\r\n", feed) == [Command("PASS", (b"a b",))]


def test_pass_without_and_with_empty_argument(feed: Feed) -> None:
    # The parser reports what was sent; refusing an empty password is the session's job.
    assert feed_parser(b"PASS\r\nPASS \r\n", feed) == [Command("PASS"), Command("PASS", (b"",))]


def test_pass_rest_of_line_is_not_applied_to_other_verbs(feed: Feed) -> None:
    assert feed_parser(b"USER a b\r\n", feed) == [Command("USER", (b"a", b"b"))]
    assert feed_parser(b"USER a  b\r\n", feed) == [BAD_SYNTAX]


def test_non_ascii_arguments_are_kept_as_bytes(feed: Feed) -> None:
    assert feed_parser("USER jürgen\r\n".encode(), feed) == [Command("USER", ("jürgen".encode(),))]


# ------------------------------------------------------------------ line length limits


def test_255_octet_line_is_accepted(feed: Feed) -> None:
    line = user_line(limits.MAX_COMMAND_LINE)
    assert feed_parser(line, feed) == [Command("USER", (line[5:-2],))]


def test_bare_lf_line_counts_as_crlf_for_the_limit(feed: Feed) -> None:
    """It is re-sent upstream with CRLF, so it must fit 255 octets in that form (RFC 2449 s4)."""
    fits = user_line(limits.MAX_COMMAND_LINE - 1, end=b"\n")  # 253 + LF -> 255 with CRLF
    assert feed_parser(fits, feed) == [Command("USER", (fits[5:-1],))]
    too_long = user_line(limits.MAX_COMMAND_LINE, end=b"\n")  # 254 + LF -> 256 with CRLF
    assert feed_parser(too_long, feed) == [TOO_LONG]


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_256_octet_line_is_too_long_and_session_stays_usable(feed: Feed, end: bytes) -> None:
    parser = CommandParser()
    data = user_line(limits.MAX_COMMAND_LINE + 1, end) + b"NOOP\r\n"
    assert feed_parser(data, feed, parser=parser) == [TOO_LONG, Command("NOOP")]
    assert parser.bad_count == 0  # the good command reset the counter
    assert feed_parser(b"STAT\r\n", feed, parser=parser) == [Command("STAT")]


def test_too_long_is_reported_as_soon_as_the_limit_is_passed() -> None:
    parser = CommandParser()
    parser.receive_data(user_line(limits.MAX_COMMAND_LINE)[:-1])  # 254 octets, CR included
    assert drain_parser(parser) == []  # an LF would still make a legal 255-octet line
    parser.receive_data(b"x")  # now CRLF cannot fit any more
    assert drain_parser(parser) == [TOO_LONG]
    assert parser.buffered() == 0


def test_too_long_without_line_end_is_reported_early() -> None:
    parser = CommandParser()
    parser.receive_data(b"A" * (limits.MAX_COMMAND_LINE - 1))
    assert drain_parser(parser) == []
    parser.receive_data(b"A")
    assert drain_parser(parser) == [TOO_LONG]


def test_64k_garbage_without_newline_gives_one_too_long_and_bounded_buffer(feed: Feed) -> None:
    garbage = bytes((i * 7 + 1) % 256 or 1 for i in range(64 * 1024)).replace(b"\n", b"x")
    assert b"\n" not in garbage
    parser = CommandParser()
    high_water = [0]
    events = feed_parser(garbage, feed, parser=parser, max_buffered=high_water)
    assert events == [TOO_LONG]
    assert high_water[0] < limits.MAX_COMMAND_LINE
    assert parser.buffered() == 0  # draining keeps nothing
    assert parser.bad_count == 1
    # The line end finishes the drained line; the next command parses normally.
    assert feed_parser(b"\r\nNOOP\r\n", feed, parser=parser) == [Command("NOOP")]
    assert parser.bad_count == 0


def test_drained_line_then_eof(feed: Feed) -> None:
    events = feed_parser(b"X" * 1000, feed, eof=True)
    assert events == [TOO_LONG, ConnectionClosed()]


def test_several_too_long_lines_each_reported_once(feed: Feed) -> None:
    data = (b"X" * 300 + b"\r\n") * 3 + b"QUIT\r\n"
    parser = CommandParser()
    assert feed_parser(data, feed, parser=parser) == [TOO_LONG, TOO_LONG, TOO_LONG, Command("QUIT")]


def test_sasl_exchange_has_the_larger_limit(feed: Feed) -> None:
    ok_line = b"A" * (limits.MAX_SASL_LINE - 2)
    long_line = b"A" * (limits.MAX_SASL_LINE - 1)
    parser = CommandParser()
    enter_sasl(parser)
    assert parser.line_limit == limits.MAX_SASL_LINE
    data = ok_line + b"\r\n" + long_line + b"\r\n" + b"=\r\n"
    assert feed_parser(data, feed, parser=parser) == [
        SaslResponse(ok_line),
        TOO_LONG,
        SaslResponse(b"="),
    ]


def test_commands_refuse_what_a_sasl_exchange_accepts(feed: Feed) -> None:
    parser = CommandParser()
    assert parser.line_limit == limits.MAX_COMMAND_LINE
    assert feed_parser(b"A" * 300 + b"\r\n", feed, parser=parser) == [TOO_LONG]


def test_sasl_lines_are_raw(feed: Feed) -> None:
    parser = CommandParser()
    enter_sasl(parser)
    data = b"NOOP\r\n\r\n*\r\ndXNlcg==\r\n"
    assert feed_parser(data, feed, parser=parser) == [
        SaslResponse(b"NOOP"),
        SaslResponse(b""),
        SaslResponse(b"*"),
        SaslResponse(b"dXNlcg=="),
    ]
    assert parser.bad_count == 0


def test_sasl_response_pipelined_after_auth(feed: Feed) -> None:
    # The switch to SASL mode happens between two events, so a long initial line that arrives
    # in the same chunk as AUTH is measured against the SASL limit.
    response = b"A" * 1000
    data = b"AUTH PLAIN\r\n" + response + b"\r\n"
    events = feed_parser(data, feed, on_event=auth_switches_sasl)
    assert events == [Command("AUTH", (b"PLAIN",)), SaslResponse(response)]


def test_leaving_the_sasl_exchange_restores_command_parsing(feed: Feed) -> None:
    parser = CommandParser()
    enter_sasl(parser)
    assert feed_parser(b"*\r\n", feed, parser=parser) == [SaslResponse(b"*")]
    leave_sasl(parser)
    assert feed_parser(b"CAPA\r\n", feed, parser=parser) == [Command("CAPA")]


# ------------------------------------------------------------------ malformed lines


@pytest.mark.parametrize("data", [b"NO\0OP\r\n", b"USER a\0b\r\n", b"\0\r\n", b"PASS \0\r\n"])
def test_nul_byte(feed: Feed, data: bytes) -> None:
    assert feed_parser(data + b"NOOP\r\n", feed) == [NUL_BYTE, Command("NOOP")]


@pytest.mark.parametrize(
    "data",
    [
        b"NO\r\n",  # too short
        b"NOOPS\r\n",  # too long
        b"N0OP\r\n",  # digit
        b"RE-T 1\r\n",
        b" NOOP\r\n",  # leading space: empty keyword
        "ÉTAT\r\n".encode(),  # non-ASCII letters
        b"\xff\xfe\xfd\r\n",
        b"\xc3\xa9\xc3\xa9\r\n",  # 4 octets, not ASCII
        b"NO_P\r\n",
        b"\tNOOP\r\n",
    ],
)
def test_bad_verb(feed: Feed, data: bytes) -> None:
    assert feed_parser(data + b"NOOP\r\n", feed) == [BAD_VERB, Command("NOOP")]


@pytest.mark.parametrize(
    "data",
    [
        b"NO\rOP\r\n",  # CR inside the keyword
        b"USER a\rb\r\n",  # CR inside an argument
        b"NOOP\r\r\n",  # CR before CRLF
        b"\r\r\n",
        b"PASS a\rb\r\n",  # even the rest-of-line argument
    ],
)
def test_cr_inside_a_line_is_bad_syntax(feed: Feed, data: bytes) -> None:
    assert feed_parser(data + b"NOOP\r\n", feed) == [BAD_SYNTAX, Command("NOOP")]


@pytest.mark.parametrize(
    "data", [b"LIST  1\r\n", b"LIST 1 \r\n", b"USER \r\n", b"TOP 1  2\r\n", b"STAT \r\n"]
)
def test_empty_arguments_are_bad_syntax(feed: Feed, data: bytes) -> None:
    assert feed_parser(data, feed) == [BAD_SYNTAX]


@pytest.mark.parametrize("data", [b"\r\n", b"\n"])
def test_empty_line(feed: Feed, data: bytes) -> None:
    assert feed_parser(data + b"NOOP\r\n", feed) == [EMPTY, Command("NOOP")]


def test_nul_is_checked_before_cr_and_verb() -> None:
    assert parse_command_line(b"\r\0") == NUL_BYTE
    assert parse_command_line(b"X\r") == BAD_SYNTAX
    assert parse_command_line(b"X") == BAD_VERB


# ------------------------------------------------------------------ EOF


def test_eof_on_empty_buffer(feed: Feed) -> None:
    assert feed_parser(b"", feed, eof=True) == [ConnectionClosed()]


def test_eof_after_complete_lines(feed: Feed) -> None:
    events = feed_parser(b"NOOP\r\nQUIT\r\n", feed, eof=True)
    assert events == [Command("NOOP"), Command("QUIT"), ConnectionClosed()]


def test_eof_discards_a_partial_line(feed: Feed) -> None:
    parser = CommandParser()
    assert feed_parser(b"NOOP\r\nQUI", feed, parser=parser, eof=True) == [
        Command("NOOP"),
        ConnectionClosed(),
    ]
    assert parser.buffered() == 0


def test_connection_closed_repeats() -> None:
    parser = CommandParser()
    parser.receive_data(b"")
    assert parser.next_event() == ConnectionClosed()
    assert parser.next_event() == ConnectionClosed()


# ------------------------------------------------------------------ bad_count, buffer control


def test_bad_count_counts_consecutive_bad_lines(feed: Feed) -> None:
    parser = CommandParser()
    bad = b"\r\n" + b"XX\r\n" + b"A\0A\r\n" + b"X" * 300 + b"\r\n"
    assert feed_parser(bad, feed, parser=parser) == [EMPTY, BAD_VERB, NUL_BYTE, TOO_LONG]
    assert parser.bad_count == 4
    feed_parser(b"NOOP\r\n", feed, parser=parser)
    assert parser.bad_count == 0
    feed_parser(b"\r\n" * limits.MAX_BAD_COMMANDS, feed, parser=parser)
    assert parser.bad_count == limits.MAX_BAD_COMMANDS


def test_sasl_responses_do_not_touch_bad_count(feed: Feed) -> None:
    parser = CommandParser()
    feed_parser(b"\r\n\r\n", feed, parser=parser)
    enter_sasl(parser)
    assert feed_parser(b"\0junk\r\n", feed, parser=parser) == [SaslResponse(b"\0junk")]
    assert parser.bad_count == 2


def test_buffered_reports_bytes_pipelined_after_stls() -> None:
    # RFC 2595 section 4 / CVE-2011-0411 style: bytes pipelined after STLS must not be
    # executed after the TLS handshake; the session closes when any are buffered.
    parser = CommandParser()
    parser.receive_data(b"STLS\r\nUSER evil\r\nPASS x\r\n")
    assert parser.next_event() == Command("STLS")
    assert parser.buffered() == len(b"USER evil\r\nPASS x\r\n")


# ------------------------------------------------------------------ parse_command_line, render


@pytest.mark.parametrize(
    "cmd",
    [
        Command("NOOP"),
        Command("USER", (b"bob",)),
        Command("TOP", (b"1", b"10")),
        Command("AUTH", (b"PLAIN", b"AGJvYgBwdw==")),
    ],
)
def test_render_parses_back(cmd: Command) -> None:
    wire = cmd.render()
    assert wire.endswith(b"\r\n")
    assert parse_command_line(wire[:-2]) == cmd


def test_render_of_pass_keeps_the_spaces() -> None:
    assert Command("PASS", (b" a b ",)).render() == b"PASS  a b \r\n"
    assert parse_command_line(b"PASS  a b ") == Command("PASS", (b" a b ",))


def test_parser_events_are_client_events() -> None:
    events: list[ClientEvent] = feed_parser(b"NOOP\r\n\r\n", whole, eof=True)
    assert [type(e) for e in events] == [Command, BadCommand, ConnectionClosed]


# ------------------------------------------------------------------ valid_transaction_args


def test_every_transaction_verb_has_numeric_args() -> None:
    for verb in ALLOWED_VERBS[State.TRANSACTION]:
        assert VERBS[verb].args is not None, verb


@pytest.mark.parametrize(
    ("cmd", "valid"),
    [
        (Command("STAT"), True),
        (Command("STAT", (b"1",)), False),
        (Command("LIST"), True),
        (Command("LIST", (b"1",)), True),
        (Command("LIST", (b"1", b"2")), False),
        (Command("LIST", (b"a",)), False),
        (Command("UIDL"), True),
        (Command("UIDL", (b"42",)), True),
        (Command("UIDL", (b"4x",)), False),
        (Command("RETR"), False),
        (Command("RETR", (b"1",)), True),
        (Command("RETR", (b"1", b"2")), False),
        (Command("RETR", (b"-1",)), False),
        (Command("RETR", (b"+1",)), False),
        (Command("RETR", (b"1" * MAX_NUMBER_DIGITS,)), True),
        (Command("RETR", (b"1" * (MAX_NUMBER_DIGITS + 1),)), False),
        (Command("RETR", ("\uff11".encode(),)), False),  # fullwidth digit: not ASCII
        (Command("DELE", (b"3",)), True),
        (Command("DELE"), False),
        (Command("TOP", (b"1", b"0")), True),
        (Command("TOP", (b"1",)), False),
        (Command("TOP", (b"1", b"x")), False),
        (Command("TOP", (b"1", b"2", b"3")), False),
        (Command("NOOP"), True),
        (Command("NOOP", (b"1",)), False),
        (Command("RSET"), True),
        (Command("RSET", (b"1",)), False),
        (Command("QUIT"), True),
        (Command("QUIT", (b"now",)), False),
        (Command("CAPA"), True),
        (Command("CAPA", (b"x",)), False),
    ],
)
def test_valid_transaction_args(cmd: Command, valid: bool) -> None:
    assert valid_transaction_args(cmd) is valid


def test_valid_transaction_args_through_the_parser(feed: Feed) -> None:
    events = feed_parser(b"retr 7\r\ntop 7 5\r\nlist x\r\n", feed)
    assert [valid_transaction_args(e) for e in events if isinstance(e, Command)] == [
        True,
        True,
        False,
    ]


def test_refused_commands_extend_the_bad_streak(feed: Feed) -> None:
    parser = CommandParser()
    feed_parser(b"\0\r\n", feed, parser=parser)
    assert parser.bad_count == 1
    feed_parser(b"XXXX\r\n", feed, parser=parser)  # well-formed: the parser resets ...
    assert parser.bad_count == 0
    parser.refuse_last_command()  # ... until the session refuses the verb
    assert parser.bad_count == 2
    feed_parser(b"YYYY\r\n", feed, parser=parser)
    parser.refuse_last_command()
    assert parser.bad_count == 3
