"""Evidence kept with a verdict: re-scoring it equals scanning, feeds and thresholds are followed,
truncated evidence is never re-scored, hostile stored evidence is refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import pytest

from popproxy.scan import Scanner, ScanSettings
from popproxy.scan.evidence import MAX_EVIDENCE_BYTES, Evidence, bound, rescore
from popproxy.scan.feeds import HostFeed
from popproxy.scan.model import load_for
from popproxy.scan.settings import Thresholds

DATA = Path(__file__).parent.parent / "data" / "scan"
SHOP = (b"From: Shop <news@shop.example.test>\r\nSubject: Spring sale\r\n"
        b"Content-Type: text/html\r\n\r\n"
        b'<p>Sale: <a href="https://www.shop.example.test/sale">see it</a> and '
        b'<a href="https://cdn.pics.example/x.png">pictures</a>.</p>\r\n')


def _feed(tmp_path: Path, hosts: str, name: str = "feed.txt") -> HostFeed:
    path = tmp_path / name
    path.write_text(hosts)
    return HostFeed(path)


@pytest.mark.parametrize("combiner", ["model", "weights"])
def test_rescoring_with_the_same_feeds_gives_the_scans_verdict(
        tmp_path: Path, combiner: Literal["model", "weights"]) -> None:
    """Every test message, with a feed listing one of its hosts: same score, action, reasons."""
    listed = "www.shop.example.test\n198.51.100.7\nevil.example\nbit.ly\n"
    scanner = Scanner(ScanSettings(combiner=combiner), feeds=(_feed(tmp_path, listed),))
    checked = 0
    for path in [*sorted(DATA.glob("*.eml")), None]:
        message = SHOP if path is None else path.read_bytes()
        verdict, kept = scanner.scan_evidence(message)
        assert kept is not None and not kept.truncated
        again = scanner.rescore(kept)
        assert (again.score, again.action, again.reasons) == (
            verdict.score, verdict.action, verdict.reasons), path
        checked += 1
    assert checked > 10


def test_a_feed_update_is_followed_without_the_message(tmp_path: Path) -> None:
    scanner = Scanner(ScanSettings(), feeds=())
    verdict, kept = scanner.scan_evidence(SHOP)
    assert verdict.action == "pass" and kept is not None
    assert kept.hosts == ("www.shop.example.test", "cdn.pics.example")
    thresholds = ScanSettings().thresholds
    unrelated = rescore(kept, (_feed(tmp_path, "other.example\n"),), load_for(None), thresholds)
    assert unrelated.action == "pass"
    listed = rescore(kept, (_feed(tmp_path, "shop.example.test\n", "f2"),), load_for(None),
                     thresholds)
    assert listed.action != "pass"
    assert "link-feed-host (shop.example.test in f2)" in listed.reasons


def test_the_thresholds_and_combiner_are_the_current_ones(tmp_path: Path) -> None:
    scanner = Scanner(ScanSettings(), feeds=(_feed(tmp_path, "www.shop.example.test\n"),))
    _, kept = scanner.scan_evidence(SHOP)
    assert kept is not None
    strict = rescore(kept, scanner.feeds, None, Thresholds(0.5, 0.6, 0.7))
    lenient = rescore(kept, scanner.feeds, None, Thresholds(100, 200, 300))
    assert (strict.action, lenient.action) == ("quarantine", "pass")
    assert strict.score == lenient.score == 7.0  # link-feed-host's table weight


def test_evidence_past_the_bound_is_cut_strongest_first_and_never_rescored() -> None:
    hosts = tuple(f"host-{i:04d}.example" for i in range(400))
    big = Evidence((("link-ip-host", "198.51.100.7"), ("html-image-only", "3 images")), hosts,
                   {"url.count": 3.0})
    cut = bound(big)
    assert cut.truncated and cut.size() <= MAX_EVIDENCE_BYTES
    assert cut.signals == big.signals  # signals outrank the hosts
    assert cut.hosts == hosts[: len(cut.hosts)] and 0 < len(cut.hosts) < len(hosts)
    with pytest.raises(ValueError, match="truncated"):
        rescore(cut, (), None, Thresholds(4, 7, 10))
    small = Evidence((("link-ip-host", "x"),), ("a.example",), {})
    assert bound(small) is small


def test_a_message_with_many_hosts_keeps_truncated_evidence() -> None:
    links = "".join(f'<a href="https://h{i}.site-{i:03d}.example/">{i}</a>\n' for i in range(150))
    message = b"From: n@news.example\r\nContent-Type: text/html\r\n\r\n" + links.encode()
    _, kept = Scanner(ScanSettings(), feeds=()).scan_evidence(message)
    assert kept is not None and kept.truncated and kept.size() <= MAX_EVIDENCE_BYTES


def test_stored_form_round_trips_and_is_compact() -> None:
    kept = Evidence((("link-shortener", "bit.ly"),), ("bit.ly",), {"url.count": 1.0},
                    truncated=True)
    again = Evidence.from_json(json.loads(json.dumps(kept.to_json())))
    assert again == kept
    assert kept.size() < 100


@pytest.mark.parametrize("damage", [
    {"s": [["not-a-signal", ""]]},
    {"h": ["x" * 300]},
    {"f": {"url.count": "nan"}},
    {"s": "link-ip-host"},
    {"h": [7]},
])
def test_hostile_stored_evidence_is_refused(damage: dict[str, object]) -> None:
    record = {**Evidence((("link-ip-host", "x"),), ("a.example",), {}).to_json(), **damage}
    with pytest.raises((ValueError, TypeError, KeyError)):
        Evidence.from_json(record)


def test_unscanned_messages_have_no_evidence() -> None:
    scanner = Scanner(dataclasses.replace(ScanSettings(), time_budget_seconds=0.0), feeds=(),
                      clock=iter(range(0, 10**6, 10)).__next__)
    verdict, kept = scanner.scan_evidence(SHOP)
    assert verdict.action == "unscanned" and kept is None
