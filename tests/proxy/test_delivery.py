"""Moving a message: into spool files (unstuffed, bounded), out of them (stuffed, cut for
TOP), and from the upstream with its header block replaced.  No session, no sockets: the
upstream is a ``ScriptedChannel`` fed whole and one byte at a time."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from popproxy.pop3.events import Command
from popproxy.proxy import delivery
from popproxy.proxy.delivery import (
    SessionSpool,
    renamed_head,
    send_file,
    spool_body,
    stream_with_header,
    unscanned_head,
)
from popproxy.proxy.upstream import UpstreamChannel, UpstreamConnection
from popproxy.proxy.verdict_cache import CachedVerdict
from tests.helpers import make_config
from tests.proxy.test_upstream import GREETING, Client, ScriptedChannel
from tests.support.feeds import FEED_IDS, FEEDS, Feed

MESSAGE = b"Subject: hi\r\nX-Popproxy-Verdict: clean\r\n\r\n.dot first\r\nline two\r\n"
STUFFED = MESSAGE.replace(b"\r\n.", b"\r\n..")
RETR = Command("RETR", (b"1",))


def _upstream(answer: bytes, feed: Feed) -> UpstreamConnection:
    channel = ScriptedChannel([GREETING, *feed(answer)])

    async def connect(host: str, port: int) -> UpstreamChannel:
        return channel

    return asyncio.run(UpstreamConnection.open(make_config(110).upstream, None, connect))


async def _spool(upstream: UpstreamConnection, path: Path, limit: int | None) -> bytes:
    await upstream.request(RETR)
    spooled = await spool_body(upstream.body(), path, limit)
    assert spooled.length == path.stat().st_size
    assert spooled.digest == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return path.read_bytes()


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_spool_body_unstuffs_into_a_private_file(feed: Feed, tmp_path: Path) -> None:
    upstream = _upstream(b"+OK\r\n" + STUFFED + b".\r\n", feed)
    assert asyncio.run(_spool(upstream, tmp_path / "m", None)) == MESSAGE
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o600


def test_spool_body_keeps_at_most_limit_octets_and_reads_the_rest(tmp_path: Path) -> None:
    upstream = _upstream(b"+OK\r\n" + STUFFED + b".\r\n+OK next\r\n", FEEDS[1])

    async def main() -> tuple[bytes, bool]:
        kept = await _spool(upstream, tmp_path / "m", 10)
        return kept, (await upstream.request(Command("NOOP"))).ok  # the stream is in step

    assert asyncio.run(main()) == (MESSAGE[:10], True)


def test_session_spool_is_made_when_needed_and_removed(tmp_path: Path) -> None:
    spool = SessionSpool(tmp_path / "spool")
    assert not (tmp_path / "spool").exists()
    path = spool.file("1.eml")
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert spool.file("2.eml").parent == path.parent
    path.write_bytes(b"x")
    spool.remove()
    assert not path.parent.exists()
    assert spool.file("1.eml").parent != path.parent  # a fresh directory afterwards


def test_session_spool_keeps_renders_up_to_its_budget(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the budget a render is removed (RETR makes it again): a mailbox of large flagged
    messages cannot fill the disk one session copy at a time."""
    monkeypatch.setattr(delivery, "KEPT_RENDERS_BUDGET", 10)
    spool = SessionSpool(tmp_path / "spool")
    first, second, third = spool.file("1"), spool.file("2"), spool.file("3")
    first.write_bytes(b"x" * 6)
    second.write_bytes(b"y" * 6)
    third.write_bytes(b"z" * 4)
    assert spool.keep(first) and first.exists()
    assert not spool.keep(second) and not second.exists()
    assert spool.keep(third) and third.exists()
    first.write_bytes(b"x" * 6)  # made again and kept again: counted once
    assert spool.keep(first)
    spool.remove()
    fresh = spool.file("4")
    fresh.write_bytes(b"w" * 10)
    assert spool.keep(fresh)  # the budget starts over with the next directory


def test_send_file_stuffs_and_terminates(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(MESSAGE[:20])
    second.write_bytes(MESSAGE[20:])
    client = Client()
    sent = asyncio.run(send_file(client, (first, second), None))
    expected_body = STUFFED + b".\r\n"
    assert bytes(client.received) == f"+OK {len(MESSAGE)} octets\r\n".encode() + expected_body
    assert sent == len(expected_body)


def test_send_file_cuts_for_top(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(MESSAGE)
    client = Client()
    asyncio.run(send_file(client, (path,), 1))  # the header block and one body line
    assert bytes(client.received) == (b"+OK\r\nSubject: hi\r\nX-Popproxy-Verdict: clean\r\n"
                                      b"\r\n..dot first\r\n.\r\n")


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_stream_with_header_replaces_only_the_header(feed: Feed) -> None:
    upstream, client = _upstream(b"+OK\r\n" + STUFFED + b".\r\n", feed), Client()
    relayed = asyncio.run(stream_with_header(upstream, client, RETR, 99, None,
                                             lambda head: b"X-New: 1\r\n" + head, 1000))
    assert bytes(client.received) == b"+OK 99 octets\r\nX-New: 1\r\n" + STUFFED + b".\r\n"
    assert relayed <= len(STUFFED)


def test_stream_with_header_of_a_message_that_is_all_header() -> None:
    upstream, client = _upstream(b"+OK\r\nSubject: only\r\n.\r\n", FEEDS[1]), Client()
    relayed = asyncio.run(stream_with_header(upstream, client, Command("TOP", (b"1", b"0")),
                                             0, 0, lambda head: head.upper(), 1000))
    assert (bytes(client.received), relayed) == (b"+OK\r\nSUBJECT: ONLY\r\n.\r\n", 0)


def test_stream_with_header_passes_an_err_on() -> None:
    upstream, client = _upstream(b"-ERR no such message\r\n", FEEDS[0]), Client()
    asyncio.run(stream_with_header(upstream, client, RETR, 1, None, lambda h: b"", 1000))
    assert bytes(client.received) == b"-ERR no such message\r\n"


def test_a_header_over_the_limit_is_cut_where_it_was_read() -> None:
    long_head = b"Subject: " + b"a" * 100 + b"\r\n\r\nbody\r\n"
    upstream, client = _upstream(b"+OK\r\n" + long_head + b".\r\n", FEEDS[1]), Client()
    seen: list[bytes] = []

    def rewrite(head: bytes) -> bytes:
        seen.append(head)
        return head

    asyncio.run(stream_with_header(upstream, client, RETR, 1, None, rewrite, 50))
    assert len(seen[0]) == 51  # one byte over the limit, fed one byte at a time
    assert bytes(client.received) == b"+OK 1 octets\r\n" + long_head + b".\r\n"


def test_head_rewrites_rename_forged_verdicts() -> None:
    head = b"Subject: hi\r\nX-Popproxy-Verdict: clean\r\n\r\n"
    assert renamed_head(head) == b"Subject: hi\r\nX-Original-Verdict: clean\r\n\r\n"
    entry = CachedVerdict("unscanned", 0.0, ("scanner timed out",), 10, 0.0, "g1")
    assert unscanned_head(entry)(head) == (
        b"X-Popproxy-Verdict: unscanned\r\nX-Popproxy-Reasons: scanner timed out\r\n"
        + renamed_head(head))
