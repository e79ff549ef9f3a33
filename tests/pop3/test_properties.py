"""Hypothesis properties of the sans-io core: round trips, no stray exceptions, chunking."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popproxy.pop3.commands import CommandParser
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    ClientEvent,
    Command,
    ConnectionClosed,
    EndOfBody,
    SaslResponse,
    ServerEvent,
    StatusLine,
)
from popproxy.pop3.framing import ResponseFramer, Stuffer, Unstuffer, stuff_body
from tests.pop3.feeding import (
    Feed,
    body_bytes,
    bytewise,
    coalesce,
    enter_sasl,
    feed_framer,
    feed_parser,
    leave_sasl,
    split_at,
    whole,
)

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fragments(parts: Sequence[bytes], max_size: int = 40) -> st.SearchStrategy[bytes]:
    """Bytes built mostly from protocol-relevant pieces, plus some arbitrary binary."""
    piece = st.one_of(st.sampled_from(list(parts)), st.binary(min_size=1, max_size=12))
    return st.lists(piece, max_size=max_size).map(b"".join)


BODY_PARTS = [b"\r", b"\n", b".", b"..", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"a", b"\0"]
bodies = st.one_of(st.binary(max_size=200), fragments(BODY_PARTS))

CLIENT_PARTS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"  ",
    b"USER ",
    b"PASS ",
    b"AUTH PLAIN",
    b"AUTH",
    b"*",
    b"NOOP",
    b"retr 1",
    b"TOP 1 2",
    b"\xc3\xa9",
    b"A" * 260,
    b"=",
]
client_bytes = fragments(CLIENT_PARTS)

SERVER_PARTS = [
    b"+OK",
    b"-ERR",
    b"+ ",
    b"+",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"..",
    b".\r\n",
    b"\r\n.\r\n",
    b"+OK\r\n",
    b"-ERR\r\n",
    b"+ \r\n",
    b"x" * 520,
    b"\0",
]
server_bytes = fragments(SERVER_PARTS)

VERBS = ["USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "AUTH", "CAPA", "NOOP"]
commands = st.builds(
    Command,
    st.sampled_from(VERBS),
    st.lists(st.sampled_from([b"1", b"PLAIN", b"LOGIN", b"x"]), max_size=2).map(tuple),
)

cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=12)


def pieces(data: bytes, positions: Sequence[int]) -> list[bytes]:
    """Split at the given positions (modulo the length); empty pieces are kept."""
    bounds = sorted(p % (len(data) + 1) for p in positions)
    bounds = [0, *bounds, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def random_feed(positions: Sequence[int]) -> Feed:
    return lambda data: split_at(*(p % (len(data) + 1) for p in positions))(data)


# ------------------------------------------------------------------ (1) dot-stuffing round trip


@SETTINGS
@given(body=bodies, stuff_cuts=cuts, unstuff_cuts=cuts, wire_cuts=cuts)
def test_stuffing_round_trip_and_framing(
    body: bytes, stuff_cuts: list[int], unstuff_cuts: list[int], wire_cuts: list[int]
) -> None:
    stuffer = Stuffer()
    stuffed = b"".join(stuffer.feed(p) for p in pieces(body, stuff_cuts))
    tail = stuffer.finish()
    assert stuffed + tail == stuff_body(body)  # chunking of the Stuffer does not matter

    unstuffer = Unstuffer()
    assert b"".join(unstuffer.feed(p) for p in pieces(stuffed, unstuff_cuts)) == body

    # The stuffed body, terminated, framed as the answer to RETR.
    wire = b"+OK\r\n" + b"+OK\r\n" + stuffed + tail
    retr = Command("RETR", (b"1",))
    events = coalesce(feed_framer(wire, random_feed(wire_cuts), commands=(retr,)))
    assert events[:2] == [
        StatusLine("+OK", b"+OK\r\n", False),
        StatusLine("+OK", b"+OK\r\n", True),
    ]
    assert events[-1] == EndOfBody()
    assert len(events) == (4 if body else 3)
    framed = body_bytes(events)
    assert framed == stuffed + tail[: -len(b".\r\n")]  # the exact wire bytes, still stuffed
    expected = body + (b"\r\n" if body and not body.endswith(b"\r\n") else b"")
    unstuffer = Unstuffer()
    assert b"".join(unstuffer.feed(p) for p in pieces(framed, unstuff_cuts)) == expected


# ------------------------------------------------------------------ (2) only ProtocolError escapes

ClientOp = bytes | bool  # data, enter (True) or leave (False) a SASL exchange


@SETTINGS
@given(
    ops=st.lists(st.one_of(client_bytes, st.booleans()), max_size=20),
    eof=st.booleans(),
)
def test_command_parser_never_raises_and_stays_bounded(ops: list[ClientOp], eof: bool) -> None:
    parser = CommandParser()
    try:
        for op in ops:
            if isinstance(op, bool):
                if op != parser.session.in_sasl:
                    (enter_sasl if op else leave_sasl)(parser)
            elif op:
                parser.receive_data(op)
                while (event := parser.next_event()) is not NEED_DATA:
                    assert isinstance(event, Command | BadCommand | SaslResponse)
                # Whatever the input, the parser holds less than one maximal line.
                assert parser.buffered() < parser.line_limit
        if eof:
            parser.receive_data(b"")
            while not isinstance(event := parser.next_event(), ConnectionClosed):
                assert event is not NEED_DATA
            assert parser.buffered() == 0
    except ProtocolError:
        pass


ServerOp = Command | bytes | None  # send_command, data, EOF


@SETTINGS
@given(
    ops=st.lists(
        st.one_of(commands, server_bytes, st.none()),
        max_size=20,
    )
)
def test_response_framer_never_raises_anything_but_protocol_error(ops: list[ServerOp]) -> None:
    framer = ResponseFramer()
    try:
        for op in ops:
            if isinstance(op, Command):
                assert framer.send_command(op) == op.render()
            else:
                framer.receive_data(op or b"")
                while (event := framer.next_event()) is not NEED_DATA:
                    assert isinstance(event, ServerEvent)
                    if isinstance(event, ConnectionClosed):
                        break
    except ProtocolError:
        pass


# ------------------------------------------------------------------ (3) chunking independence


def switch_modes(parser: CommandParser, event: ClientEvent) -> None:
    """AUTH with a mechanism enters a SASL exchange for exactly one response line."""
    if isinstance(event, Command) and event.verb == "AUTH" and event.args:
        enter_sasl(parser)
    elif isinstance(event, SaslResponse):
        leave_sasl(parser)


@SETTINGS
@given(data=client_bytes, positions=cuts, eof=st.booleans())
def test_command_parser_is_independent_of_chunking(
    data: bytes, positions: list[int], eof: bool
) -> None:
    reference = feed_parser(data, whole, eof=eof, on_event=switch_modes)
    for feed in (bytewise, random_feed(positions)):
        assert feed_parser(data, feed, eof=eof, on_event=switch_modes) == reference


def framer_outcome(
    data: bytes, feed: Feed, cmds: Sequence[Command], eof: bool
) -> tuple[list[ServerEvent], type[ProtocolError] | None]:
    """Coalesced events and the error (if any) that ended the stream."""
    framer = ResponseFramer()
    for cmd in cmds:
        framer.send_command(cmd)
    events: list[ServerEvent] = []
    chunks = feed(data) + ([b""] if eof else [])
    try:
        for chunk in chunks:
            framer.receive_data(chunk)
            while (event := framer.next_event()) is not NEED_DATA:
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    break
    except ProtocolError as exc:
        return coalesce(events), type(exc)
    return coalesce(events), None


@SETTINGS
@given(
    data=server_bytes,
    cmds=st.lists(commands, max_size=6),
    positions=cuts,
    eof=st.booleans(),
)
def test_response_framer_is_independent_of_chunking(
    data: bytes, cmds: list[Command], positions: list[int], eof: bool
) -> None:
    reference = framer_outcome(data, whole, cmds, eof)
    for feed in (bytewise, random_feed(positions)):
        assert framer_outcome(data, feed, cmds, eof) == reference


@SETTINGS
@given(body=bodies, positions=cuts)
def test_framed_bodies_are_independent_of_chunking(body: bytes, positions: list[int]) -> None:
    wire = b"+OK hi\r\n" + b"+OK\r\n" + stuff_body(body) + b"+OK\r\n"
    cmds = [Command("TOP", (b"1", b"0")), Command("NOOP")]
    reference = framer_outcome(wire, whole, cmds, eof=True)
    assert reference[1] is None
    assert reference[0][-2:] == [StatusLine("+OK", b"+OK\r\n", False), ConnectionClosed()]
    for feed in (bytewise, random_feed(positions)):
        assert framer_outcome(wire, feed, cmds, eof=True) == reference
