"""The mailbox view of a scanning session: STAT and LIST from verdicts, RETR as judged.

The upstream is a ``ScriptedChannel`` whose answers (UIDL, LIST, then RETR) arrive whole or
one byte at a time; verdicts are put in the service's cache first (scanned now: the cache
expires old ones), so no worker judges them, except in the last test, which scans a clean
message for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import Scan
from popproxy.proxy.mailbox import MailboxView
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.upstream import UpstreamChannel, UpstreamConnection, UpstreamError
from popproxy.proxy.upstream import UpstreamFailure as Failure
from popproxy.proxy.verdict_cache import CachedVerdict, cache_key, mailbox_key
from tests.helpers import make_config
from tests.proxy.test_upstream import GREETING, Client, ScriptedChannel
from tests.support.feeds import FEED_IDS, FEEDS, Feed, whole

CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
LISTINGS = (b"+OK\r\n1 uid-one\r\n2 uid-two\r\n.\r\n"
            b"+OK 2 messages\r\n1 %d\r\n2 900\r\n.\r\n" % len(CLEAN))
RETR_1 = b"+OK %d octets\r\n" % len(CLEAN) + CLEAN + b".\r\n"

Script = Callable[[MailboxView, Client], Awaitable[None]]


def _run(tmp_path: Path, upstream_bytes: bytes, script: Script, feed: Feed = whole,
         verdicts: dict[int, tuple[str, int]] | None = None) -> tuple[Client, Metrics]:
    """Run ``script`` on a view whose cache holds ``verdicts`` (number -> action, size)."""
    client, metrics = Client(), Metrics()
    channel = ScriptedChannel([GREETING, *feed(upstream_bytes)])

    async def connect(host: str, port: int) -> UpstreamChannel:
        return channel

    async def main() -> None:
        service = ScanService(Scan(), tmp_path / "state", Observer(metrics))
        try:
            generation = await service.generation()
            sizes = {1: len(CLEAN), 2: 900}
            for number, (action, size) in (verdicts or {}).items():
                key = cache_key("up", "alice", b"uid-one" if number == 1 else b"uid-two",
                                sizes[number])
                await service.cache.store(key, CachedVerdict(
                    action, 0.0, ("scanner timed out",), size, time.time(), generation))
            upstream = await UpstreamConnection.open(make_config(110).upstream, None, connect)
            view = MailboxView(upstream, client, service, "up", "alice",
                               lambda *a, **k: None, metrics)
            try:
                await script(view, client)
            finally:
                view.close()
        finally:
            await service.aclose()

    asyncio.run(main())
    return client, metrics


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_stat_and_list_show_the_sizes_the_client_will_receive(feed: Feed,
                                                              tmp_path: Path) -> None:
    answers: list[bytes] = []

    async def script(view: MailboxView, client: Client) -> None:
        answers.append(await view.stat())
        answers.append(await view.list(None))
        answers.append(await view.list(2))
        answers.append(await view.list(3))
        view.deleted.add(2)  # DELE (the session tracks it; the upstream hears at QUIT)
        answers.append(await view.stat())
        answers.append(await view.list(2))

    _run(tmp_path, LISTINGS, script, feed, {1: ("pass", len(CLEAN)), 2: ("unscanned", 960)})
    assert answers == [
        b"+OK 2 %d\r\n" % (len(CLEAN) + 960),
        b"+OK 2 messages\r\n1 %d\r\n2 960\r\n.\r\n" % len(CLEAN),
        b"+OK 2 960\r\n",
        b"-ERR no such message\r\n",
        b"+OK 1 %d\r\n" % len(CLEAN),
        b"-ERR no such message\r\n",
    ]


@pytest.mark.parametrize("feed", FEEDS, ids=FEED_IDS)
def test_a_passed_message_is_relayed_unchanged_and_counted(feed: Feed, tmp_path: Path) -> None:
    async def script(view: MailboxView, client: Client) -> None:
        await view.deliver(1, None)

    client, metrics = _run(tmp_path, LISTINGS + RETR_1, script, feed,
                           {1: ("pass", len(CLEAN)), 2: ("pass", 900)})
    assert bytes(client.received) == RETR_1
    assert metrics.registry.get_sample_value(
        "popproxy_bytes_relayed_total", {"direction": "to_client"}) == len(CLEAN)


def test_an_unscanned_verdict_puts_its_header_lines_in_front(tmp_path: Path) -> None:
    prefix = b"X-Popproxy-Verdict: unscanned\r\nX-Popproxy-Reasons: scanner timed out\r\n"

    async def script(view: MailboxView, client: Client) -> None:
        await view.deliver(1, None)

    client, _ = _run(tmp_path, LISTINGS + RETR_1, script, whole,
                     {1: ("unscanned", len(prefix) + len(CLEAN)), 2: ("pass", 900)})
    assert bytes(client.received) == (b"+OK %d octets\r\n" % (len(prefix) + len(CLEAN))
                                      + prefix + CLEAN + b".\r\n")


def test_retr_of_an_unknown_or_deleted_message(tmp_path: Path) -> None:
    async def script(view: MailboxView, client: Client) -> None:
        await view.deliver(7, None)
        view.deleted.add(1)
        await view.deliver(1, 0)

    client, _ = _run(tmp_path, LISTINGS, script, whole, {1: ("pass", len(CLEAN))})
    assert bytes(client.received) == b"-ERR no such message\r\n" * 2


def test_an_upstream_refusing_uidl_is_an_upstream_failure(tmp_path: Path) -> None:
    async def script(view: MailboxView, client: Client) -> None:
        with pytest.raises(UpstreamError) as caught:
            await view.stat()
        assert caught.value.reason is Failure.PROTOCOL

    client, _ = _run(tmp_path, b"-ERR UIDL not supported\r\n", script)
    assert client.received == b""


def test_a_clean_message_is_judged_once_and_delivered_as_it_is(tmp_path: Path) -> None:
    upstream = LISTINGS + RETR_1 + RETR_1  # judged from one RETR, delivered from the next

    async def script(view: MailboxView, client: Client) -> None:
        first = await view.entry(1)
        assert first is not None and first.action == "pass"
        assert await view.entry(1) is first  # no second scan in this session
        await view.deliver(1, None)

    client, metrics = _run(tmp_path, upstream, script)
    assert bytes(client.received) == RETR_1
    assert metrics.registry.get_sample_value(
        "popproxy_messages_scanned_total", {"verdict": "clean", "action": "pass"}) == 1.0


class _SharedDeletes:
    """The shared level's ``delete``, recorded (nothing else but ``close`` is asked here)."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def delete(self, keys: list[str]) -> None:
        self.asked.append(keys)

    async def close(self) -> None:
        pass


def test_verdicts_of_messages_no_longer_listed_are_forgotten_here_and_shared(
        tmp_path: Path) -> None:
    gone = cache_key("up", "alice", b"uid-gone", 10)
    shared = _SharedDeletes()

    async def script(view: MailboxView, client: Client) -> None:
        cache = view._service.cache
        await cache.store(gone, CachedVerdict("pass", 0.0, (), 10, time.time(), "old",
                                              mailbox=mailbox_key("up", "alice")))
        cache._shared = shared  # type: ignore[assignment]
        await view.stat()
        assert cache.get(gone) is None
        await view.stat()  # listed once per session: asked once

    _run(tmp_path, LISTINGS, script, whole, {1: ("pass", len(CLEAN)), 2: ("pass", 900)})
    assert shared.asked == [[gone]]
