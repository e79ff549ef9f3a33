"""pop3/listing.py: UIDL/LIST listings parsed as they arrive, in any chunking, within bounds."""

from __future__ import annotations

import pytest

from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.framing import Unstuffer
from popproxy.pop3.listing import MAX_LISTING_LINE, ListingReader, parse_listing
from tests.support.feeds import FEED_IDS, FEEDS, Feed

UIDL = b"1 00000001abc\r\n2 00000002def\r\n10 x-y.z\r\n"


def _read(data: bytes, feed: Feed, reader: ListingReader | None = None) -> dict[int, bytes]:
    reader = reader or ListingReader()
    for chunk in feed(data):
        reader.feed(chunk)
    return reader.finish()


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_entries_whatever_the_chunking(feed: Feed) -> None:
    assert _read(UIDL, feed) == {1: b"00000001abc", 2: b"00000002def", 10: b"x-y.z"}


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_malformed_lines_are_skipped_and_a_last_line_without_crlf_counts(feed: Feed) -> None:
    data = b"junk\r\n\r\n3\r\nx 4\r\n5 1200\r\n6 77"
    assert _read(data, feed) == {5: b"1200", 6: b"77"}


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_a_line_past_rfc_2449_length_is_a_protocol_error(feed: Feed) -> None:
    data = b"1 " + b"u" * MAX_LISTING_LINE + b"\r\n"
    with pytest.raises(ProtocolError, match="listing line over"):
        _read(data, feed)


def test_a_line_at_the_limit_is_kept() -> None:
    line = b"1 " + b"u" * (MAX_LISTING_LINE - 2)
    assert _read(line + b"\r\n", FEEDS[0]) == {1: b"u" * (MAX_LISTING_LINE - 2)}


def test_an_endless_line_is_refused_before_its_end_arrives() -> None:
    reader = ListingReader()
    with pytest.raises(ProtocolError):
        for _ in range(10):  # never a CRLF: the partial line alone must hit the bound
            reader.feed(b"9" * 100)


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_regression_hostile_uidl_of_many_short_lines_stops_at_the_entry_bound(feed: Feed) -> None:
    """Review finding: a UIDL of millions of short lines was held whole (and copied) in memory;
    now entries are counted as they arrive and the read stops at the bound."""
    data = b"".join(b"%d x\r\n" % n for n in range(1, 50))
    reader = ListingReader(max_entries=20)
    with pytest.raises(ProtocolError, match="over 20 entries"):
        _read(data, feed, reader)


@pytest.mark.parametrize("body", [
    UIDL, b"", b"\r\n", b"junk\r\n\r\n3\r\nx 4\r\n5 1200\r\n6 77", b"1  spaced \r\n2 a b\r\n",
    b"..1 x\r\n2 y\r\n", b"1 x\r\n..2 y\r\n.3 z\r\n", b"01 x\r\n1 y\r\n",
    b"".join(b"%d %s\r\n" % (n, b"u" * 60) for n in range(1, 40)),
], ids=lambda body: repr(body[:12]))
def test_parse_listing_reads_a_whole_body_as_the_reader_does(body: bytes) -> None:
    reader = ListingReader()
    reader.feed(Unstuffer().feed(body))
    assert parse_listing(body) == reader.finish()


def test_parse_listing_keeps_the_reader_bounds() -> None:
    with pytest.raises(ProtocolError, match="listing line over"):
        parse_listing(b"1 " + b"u" * MAX_LISTING_LINE + b"\r\n")
