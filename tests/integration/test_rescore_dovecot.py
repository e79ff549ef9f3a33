"""Issue 17 against a real Dovecot: after a feed update the next session's STAT reads nothing
from the upstream to judge (every verdict re-scored from its cached evidence), and LIST still
equals RETR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import Policy
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration.dovecot import Dovecot
from tests.integration.pop3_clients import curl, listing, login

pytestmark = pytest.mark.dovecot


def _judged(observer: Observer) -> tuple[float, float, float]:
    """(messages downloaded to judge, re-scored from evidence, bytes read to judge)."""
    registry = observer.metrics.registry
    downloaded = registry.get_sample_value("popproxy_scan_judged_total", {"how": "downloaded"})
    rescored = registry.get_sample_value("popproxy_scan_judged_total", {"how": "rescored"})
    read = registry.get_sample_value("popproxy_scan_judge_bytes_total")
    return downloaded or 0.0, rescored or 0.0, read or 0.0


def _feed(tmp_path: Path) -> Path:
    feed = tmp_path / "feed.txt"
    feed.write_text("phish-a.example\n")
    return feed


def _update(feed: Path) -> None:
    """A feed update that lists one more host, none of the mailbox's links."""
    feed.write_text("phish-a.example\nphish-b.example\n")
    os.utime(feed, ns=(10**18, 10**18))


def _config(dovecot: Dovecot, feed: Path, tmp_path: Path) -> Policy:
    scan = {"enabled": True, "feeds": [str(feed)]}
    return make_config(dovecot.port, scan=scan, state_dir=str(tmp_path / "state"))


def test_a_feed_update_rescores_without_reading_the_mailbox_again(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    feed, observer = _feed(tmp_path), Observer(Metrics())
    with running_proxy(_config(dovecot, feed, tmp_path), loop_thread, observer) as proxy:
        first = login(proxy.port)
        count, _ = first.stat()
        before = listing(first)
        first.quit()
        downloaded, rescored, read = _judged(observer)
        assert (downloaded, rescored) == (count, 0) and count == 5 and read > 0

        _update(feed)  # an hourly feed update
        second = login(proxy.port)
        assert second.stat()[0] == count
        assert _judged(observer) == (count, count, read)  # 0 bytes read to judge
        after = listing(second)
        assert after == before
        for number in range(1, 5):  # 5: Dovecot's own off-by-CRLF (test_scan_consistency)
            assert second.retr(number)[2] == after[number], number
        second.quit()


def test_curl_after_a_feed_update_reads_nothing_to_judge_and_sizes_match(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    feed, observer = _feed(tmp_path), Observer(Metrics())
    with running_proxy(_config(dovecot, feed, tmp_path), loop_thread, observer) as proxy:
        before = curl(proxy.port)
        downloaded, _, read = _judged(observer)
        assert downloaded == 5 and read > 0
        _update(feed)
        after = curl(proxy.port)
        assert after == before
        assert _judged(observer) == (downloaded, 5, read)  # re-scored, 0 bytes read
        for line in after.decode().splitlines()[:4]:  # 5: Dovecot's own off-by-CRLF
            number, size = line.split()
            assert len(curl(proxy.port, number)) == int(size), line
