"""Feed the sans-io parsers in different chunkings and collect their events.

The contract of the POP3 core is that a parser's output does not depend on how the input was
split into ``receive_data`` calls.  Every protocol test therefore runs its input through each
``Feed`` in ``FEEDS`` (whole, one byte at a time, and seeded random splits; defined in
``tests.support.feeds`` and re-exported here) and compares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from popproxy.pop3.commands import CommandParser
from popproxy.pop3.events import (
    NEED_DATA,
    BodyData,
    ClientEvent,
    Command,
    ConnectionClosed,
    ServerEvent,
)
from popproxy.pop3.framing import ResponseFramer
from popproxy.pop3.state import Event
from tests.support.feeds import FEED_IDS as FEED_IDS
from tests.support.feeds import FEEDS as FEEDS
from tests.support.feeds import Feed as Feed
from tests.support.feeds import bytewise as bytewise
from tests.support.feeds import random_split as random_split
from tests.support.feeds import split_at as split_at
from tests.support.feeds import whole as whole


def chunks_join(feed: Feed, data: bytes) -> bytes:
    """Sanity helper: a feed must never lose or reorder bytes."""
    return b"".join(feed(data))


# ------------------------------------------------------------------ CommandParser

ClientHook = Callable[[CommandParser, ClientEvent], None]


def enter_sasl(parser: CommandParser) -> None:
    """What the proxy does on ``AUTH <mech>``: the state enters the exchange, so the parser
    reads the next lines as SASL responses (RFC 5034 section 4)."""
    parser.session.apply(Event.SASL_STARTED)


def leave_sasl(parser: CommandParser) -> None:
    """The exchange ended (here: failed), so the parser reads commands again."""
    parser.session.apply(Event.LOGIN_FAILED)


def auth_switches_sasl(parser: CommandParser, event: ClientEvent) -> None:
    """What the proxy does: ``AUTH <mech>`` starts the exchange (the parser reads SASL)."""
    if isinstance(event, Command) and event.verb == "AUTH" and event.args:
        enter_sasl(parser)


def drain_parser(parser: CommandParser, on_event: ClientHook | None = None) -> list[ClientEvent]:
    """Pull events until ``NEED_DATA`` (or the first ``ConnectionClosed``, which repeats)."""
    events: list[ClientEvent] = []
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if on_event is not None:
            on_event(parser, event)
        if isinstance(event, ConnectionClosed):
            return events


def feed_parser(
    data: bytes,
    feed: Feed,
    *,
    parser: CommandParser | None = None,
    eof: bool = False,
    on_event: ClientHook | None = None,
    max_buffered: list[int] | None = None,
) -> list[ClientEvent]:
    """Feed ``data`` in ``feed`` chunks, pulling events after every chunk.

    ``max_buffered`` (a one-element list) receives the largest ``parser.buffered()`` seen after
    the events of a chunk were pulled.
    """
    parser = CommandParser() if parser is None else parser
    events: list[ClientEvent] = []
    for chunk in feed(data):
        parser.receive_data(chunk)
        events += drain_parser(parser, on_event)
        if max_buffered is not None:
            max_buffered[0] = max(max_buffered[0], parser.buffered())
    if eof:
        parser.receive_data(b"")
        events += drain_parser(parser, on_event)
    return events


# ------------------------------------------------------------------ ResponseFramer


def drain_framer(framer: ResponseFramer) -> list[ServerEvent]:
    """Pull events until ``NEED_DATA`` (or the first ``ConnectionClosed``, which repeats)."""
    events: list[ServerEvent] = []
    while True:
        event = framer.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def feed_framer(
    data: bytes,
    feed: Feed,
    *,
    commands: Iterable[Command] = (),
    framer: ResponseFramer | None = None,
    eof: bool = False,
) -> list[ServerEvent]:
    """Send ``commands`` (pipelined), then feed the upstream's ``data`` in ``feed`` chunks."""
    framer = ResponseFramer() if framer is None else framer
    for cmd in commands:
        framer.send_command(cmd)
    events: list[ServerEvent] = []
    for chunk in feed(data):
        framer.receive_data(chunk)
        events += drain_framer(framer)
    if eof:
        framer.receive_data(b"")
        events += drain_framer(framer)
    return events


def coalesce(events: Sequence[ServerEvent]) -> list[ServerEvent]:
    """Merge adjacent ``BodyData``: how a body is sliced depends on the chunking, not its bytes."""
    out: list[ServerEvent] = []
    for event in events:
        if isinstance(event, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def body_bytes(events: Sequence[ServerEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyData))
