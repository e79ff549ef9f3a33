"""Blocklist feeds: parsing, match kinds, reload on mtime change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from popproxy.scan.feeds import HostFeed, load_feeds, parse_hosts


def _feed(tmp_path: Path, text: str) -> HostFeed:
    path = tmp_path / "hosts.txt"
    path.write_text(text)
    return HostFeed(path)


def test_parse_skips_comments_and_junk() -> None:
    got = parse_hosts(["# header", "", "Evil.Test.", "bad host", "x/y", "ok.example  # note"])
    assert got == frozenset({"evil.test", "ok.example"})


def test_match_kinds(tmp_path: Path) -> None:
    feed = _feed(tmp_path, "login.evil.test\nbit.ly\ncustomer1.weebly.com\n")
    hit = feed.lookup("a.login.evil.test")
    assert hit is not None and hit.match == "host" and hit.entry == "login.evil.test"
    hit = feed.lookup("www.evil.test")
    assert hit is not None and hit.match == "domain"
    hit = feed.lookup("bit.ly")
    assert hit is not None and hit.match == "platform"
    hit = feed.lookup("customer1.weebly.com")
    assert hit is not None and hit.match == "host"
    # One listed tenant must not list the whole shared domain.
    assert feed.lookup("customer2.weebly.com") is None
    assert feed.lookup("example.org") is None


def test_reload_when_mtime_changes(tmp_path: Path) -> None:
    feed = _feed(tmp_path, "one.test\n")
    assert feed.refresh() is False
    feed.path.write_text("two.test\n")
    stat = feed.path.stat()
    os.utime(feed.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert feed.refresh() is True
    assert feed.lookup("two.test") is not None
    assert feed.lookup("one.test") is None


def test_vanished_file_keeps_hosts(tmp_path: Path) -> None:
    feed = _feed(tmp_path, "one.test\n")
    feed.path.unlink()
    assert feed.refresh() is False
    assert feed.lookup("one.test") is not None


def test_missing_file_at_start_is_loud(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_feeds([tmp_path / "nope.txt"])
