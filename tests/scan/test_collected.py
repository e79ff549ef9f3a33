"""What the scanner collects from a message's parts within its budgets, and the limit
signals it derives from running out of them."""

from __future__ import annotations

from popproxy.scan.collected import Collected, image_only, limit_signals, plain_links
from popproxy.scan.extract import Extracted, Link
from popproxy.scan.link_select import LinkPool, Selection
from popproxy.scan.mime import WalkStats

NOTHING_LEFT_OUT = Selection([], False, 0)


def test_text_is_kept_up_to_its_cap() -> None:
    found = Collected(text_cap=10, scan_left=100)
    found.add_text("hello ")
    found.add_text("world, and more")
    assert (found.text, found.text_chars, found.text_cut) == (["hello ", "worl"], 10, True)
    found.add_text("x")
    assert found.text == ["hello ", "worl"]


def test_past_the_scan_budget_a_part_is_read_as_head_and_tail() -> None:
    found = Collected(text_cap=0, scan_left=12)
    assert found.scan_slices("abcdefgh") == ["abcdefgh"]
    assert found.scan_slices("0123456789") == ["01", "89"]  # 4 left: half head, half tail
    assert found.scan_cut and found.scan_left == 0
    assert found.scan_slices("more") == []


def test_plain_links_fill_the_pool_chunk_by_chunk() -> None:
    checks: list[int] = []
    pool = LinkPool(max_candidates=2)
    text = " ".join(f"https://h{i}.example/" for i in range(5))
    plain_links(text, pool, lambda: checks.append(1), attachment=True)
    assert [link.url for link in pool.links] == ["https://h0.example/", "https://h1.example/"]
    assert all(link.attachment for link in pool.links)
    assert pool.overflow and checks


def test_no_limit_no_signal() -> None:
    found = Collected(text_cap=10, scan_left=10)
    assert limit_signals(WalkStats(), found, NOTHING_LEFT_OUT, False, 0) == []


def test_each_exhausted_limit_is_one_signal() -> None:
    found = Collected(text_cap=0, scan_left=0)
    found.scan_cut = True
    stats = WalkStats(overflow_parts=3, limits_hit=["depth", "overflow"])
    signals = limit_signals(stats, found, Selection([], True, 7), True, 1000)
    assert [(s.name, s.detail) for s in signals] == [
        ("limit-depth", "3 parts judged past it, some unjudged"),
        ("limit-links", "7 hosts judged"),
        ("limit-text", "head and tail of a part read"),
        ("limit-size", "first 1000 bytes judged"),
    ]


def test_an_unparsed_structure_is_one_signal_for_its_limits() -> None:
    stats = WalkStats(unparsed=True, limits_hit=["parts"])
    signals = limit_signals(stats, Collected(text_cap=1, scan_left=1), NOTHING_LEFT_OUT,
                            False, 0)
    assert [(s.name, s.detail) for s in signals] == [("limit-structure", "parts")]


def test_image_only_pages() -> None:
    link = Link("https://shop.example/", "href")
    assert image_only(Extracted(links=[link], text=["  Sale  "], images=3))
    assert not image_only(Extracted(links=[link], text=["x" * 300]))
    assert not image_only(Extracted(links=[Link("mailto:a@b.example", "href")]))
