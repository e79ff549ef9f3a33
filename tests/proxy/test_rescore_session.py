"""Re-scoring cached evidence in sessions (issue 17): feed and threshold changes without
downloading what keeps its action; downloading again, at the next listing, what does not.

Each test runs sessions through the proxy in front of the demo upstream and reads the proxy's
own counters: ``popproxy_scan_judged_total{how}`` and ``popproxy_scan_judge_bytes_total`` (bytes
read from the upstream to judge).  LIST must equal RETR in every session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from popproxy.metrics import Metrics
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from popproxy.proxy.verdict_cache import CACHE_FILE
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3

SHOP = (b"From: Shop <news@shop.example.test>\r\nSubject: Spring sale\r\n"
        b"Content-Type: text/html\r\n\r\n"
        b'<p>Our sale starts now: <a href="https://www.shop.example.test/sale">see it</a>.</p>\r\n')
PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"


def _count(observer: Observer, name: str, **labels: str) -> float:
    return observer.metrics.registry.get_sample_value(name, labels) or 0.0


def _judged(observer: Observer) -> tuple[float, float, float]:
    """(downloaded, rescored, bytes read to judge) so far."""
    return (_count(observer, "popproxy_scan_judged_total", how="downloaded"),
            _count(observer, "popproxy_scan_judged_total", how="rescored"),
            _count(observer, "popproxy_scan_judge_bytes_total"))


@contextmanager
def _proxy(loop: LoopThread, demo: DemoUpstream, tmp: Path, scan: dict[str, Any]
           ) -> Iterator[tuple[int, Observer]]:
    """A proxy on state directory ``tmp`` (a restart with other settings keeps the cache)."""
    observer = Observer(Metrics())
    config = make_config(demo.port, scan={"enabled": True, **scan}, state_dir=str(tmp))
    with running_proxy(config, loop, observer) as proxy:
        yield proxy.port, observer


def _session(port: int) -> tuple[list[int], list[int]]:
    """LIST sizes and RETR sizes of one session."""
    with RawPOP3(port) as c:
        c.login("u", "p")
        listing = c.command("LIST").split(b"\r\n")[1:-2]
        sizes = [int(line.split()[1]) for line in listing]
        retr = []
        for n in range(1, len(sizes) + 1):
            raw = c.command(f"RETR {n}")
            body = raw.split(b"\r\n", 1)[1][: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
            retr.append(len(body))
        c.command("QUIT")
    return sizes, retr


def _write_feed(feed: Path, hosts: str, tick: int) -> None:
    feed.write_text(hosts)
    os.utime(feed, ns=(tick * 10**9, tick * 10**9))  # a new mtime however fast the test runs


def test_a_feed_change_that_keeps_every_action_downloads_nothing(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    _write_feed(feed, "phish.example\n", 1)
    demo = DemoUpstream({b"u": Mailbox(b"p", [SHOP, PHISH, CLEAN])})
    with running_demo(loop_thread, demo), \
            _proxy(loop_thread, demo, tmp_path, {"feeds": [str(feed)]}) as (port, observer):
        first = _session(port)
        assert _judged(observer)[:2] == (3, 0)
        read = _judged(observer)[2]
        assert read >= len(SHOP) + len(PHISH) + len(CLEAN)
        _write_feed(feed, "phish.example\nanother.example\n", 2)  # lists none of their hosts
        second = _session(port)
        # Re-scored from evidence: nothing more read from the upstream to judge.
        assert _judged(observer) == (3, 3, read)
        # ... and written in one append of one line, not one per message (verdict_journal).
        assert (tmp_path / CACHE_FILE).read_text().count('"carried"') == 1
        third = _session(port)
        assert _judged(observer) == (3, 3, read)  # the carried-over verdicts are current now
    assert first == second == third
    assert first[0] == first[1]  # LIST == RETR


def test_a_feed_listing_a_link_host_downloads_that_message_at_the_next_listing(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    _write_feed(feed, "phish.example\n", 1)
    demo = DemoUpstream({b"u": Mailbox(b"p", [SHOP, CLEAN])})
    with running_demo(loop_thread, demo), \
            _proxy(loop_thread, demo, tmp_path, {"feeds": [str(feed)]}) as (port, observer):
        before = _session(port)
        _write_feed(feed, "www.shop.example.test\n", 2)
        with RawPOP3(port) as c:
            c.login("u", "p")
            c.command("STAT")  # the first listing: SHOP's action changes, so it is downloaded
            assert _judged(observer)[:2] == (3, 1)  # CLEAN re-scored, SHOP judged again
            c.command("QUIT")
        after = _session(port)
    assert after[0] == after[1]
    assert after[0][0] != before[0][0]  # SHOP is no longer passed as it is
    assert after[0][1] == before[0][1]


def test_a_threshold_change_that_changes_the_action_downloads_at_the_next_listing(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", [PHISH, CLEAN])})
    with running_demo(loop_thread, demo):
        with _proxy(loop_thread, demo, tmp_path, {}) as (port, observer):
            before = _session(port)
            assert _judged(observer)[:2] == (2, 0)
        lenient = {"thresholds": {"tag": 4, "defang": 100, "quarantine": 100}}
        with _proxy(loop_thread, demo, tmp_path, lenient) as (port, observer):
            after = _session(port)
            # PHISH (15.5) was quarantined, is tagged now: downloaded to render the tag.
            # CLEAN stays passed: re-scored.
            assert _judged(observer)[:2] == (1, 1)
    assert after[0] == after[1]
    assert after[0][0] != before[0][0] and after[0][1] == before[0][1] == len(CLEAN)


def test_a_change_that_needs_the_message_downloads_everything(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    demo = DemoUpstream({b"u": Mailbox(b"p", [PHISH, CLEAN])})
    with running_demo(loop_thread, demo):
        with _proxy(loop_thread, demo, tmp_path, {}) as (port, observer):
            _session(port)
        # The subject prefix is rendered into tagged copies: their sizes may change.
        with _proxy(loop_thread, demo, tmp_path, {"subject_prefix": "[CHECK]"}) as (
                port, observer):
            sizes, retr = _session(port)
            assert _judged(observer)[:2] == (2, 0)
    assert sizes == retr


def test_verdicts_of_messages_no_longer_listed_are_dropped(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    box = Mailbox(b"p", [PHISH, CLEAN])
    demo = DemoUpstream({b"u": box})
    with running_demo(loop_thread, demo), \
            _proxy(loop_thread, demo, tmp_path, {}) as (port, observer):
        _session(port)
        with RawPOP3(port) as c:
            c.login("u", "p")
            c.command("DELE 1")
            c.command("QUIT")  # committed upstream (RFC 1939 section 6)
        _session(port)  # its listing no longer has message 1
        cache = (tmp_path / CACHE_FILE).read_text()
    assert cache.count('"forgotten": 1') == 1
    assert _judged(observer)[:2] == (2, 0)


def test_truncated_evidence_is_judged_from_the_message_again(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """A message whose evidence ran past MAX_EVIDENCE_BYTES cannot be re-scored (a host left
    out might be listed now): a feed change downloads it, never passes it on partial evidence."""
    links = "".join(f'<a href="https://host-{i:03d}.newsletter-{i:03d}.example/">{i}</a>\r\n'
                    for i in range(120))
    many = (b"From: News <n@newsletter.example>\r\nSubject: links\r\n"
            b"Content-Type: text/html\r\n\r\n" + links.encode())
    feed = tmp_path / "feed.txt"
    _write_feed(feed, "phish.example\n", 1)
    demo = DemoUpstream({b"u": Mailbox(b"p", [many, CLEAN])})
    with running_demo(loop_thread, demo), \
            _proxy(loop_thread, demo, tmp_path, {"feeds": [str(feed)]}) as (port, observer):
        first = _session(port)
        _write_feed(feed, "phish.example\nanother.example\n", 2)
        second = _session(port)
        assert _judged(observer)[:2] == (3, 1)  # CLEAN re-scored, the newsletter downloaded
    assert first == second and first[0] == first[1]
    assert '"t":1' in (tmp_path / CACHE_FILE).read_text().replace(" ", "")
