"""Feed the sans-io parsers in different chunkings and collect their events.

The contract of the POP3 core is that a parser's output does not depend on how the input was
split into ``receive_data`` calls.  Every protocol test therefore runs its input through each
``Feed`` in ``FEEDS`` (whole, one byte at a time, and seeded random splits) and compares.
"""

from __future__ import annotations

import itertools
import random
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

Feed = Callable[[bytes], list[bytes]]
"""Splits a byte string into the chunks handed to ``receive_data`` (no empty chunks)."""


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_split(seed: int) -> Feed:
    """Chunks of 1..7 bytes, reproducible from ``seed``."""

    def split(data: bytes) -> list[bytes]:
        rng = random.Random(seed)
        chunks, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 7)
            chunks.append(data[pos : pos + step])
            pos += step
        return chunks

    split.__name__ = f"random_split_{seed}"
    return split


def split_at(*positions: int) -> Feed:
    """Cut the data at the given offsets (out-of-range or repeated offsets are ignored)."""

    def split(data: bytes) -> list[bytes]:
        cuts = sorted({p for p in positions if 0 < p < len(data)})
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    split.__name__ = "split_at_" + "_".join(map(str, positions))
    return split


FEEDS: list[Feed] = [whole, bytewise, random_split(1), random_split(2)]
FEED_IDS = ["whole", "bytewise", "random1", "random2"]


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
