"""The linear estimate of Lexbor's tree-building work: deep nesting and long tags are costly,
wide markup is not, and markup hiding tags in comments or raw text is not over-charged.  What
the defang does with costly markup is tested in test_defang_html.py."""

from __future__ import annotations

import time

import pytest

from popproxy.scan.html_cost import (
    MAX_PARSE_WORK,
    MAX_RECONSTRUCT_WORK,
    SAFE_TAG_COUNT,
    parse_work,
    reconstruct_work,
    too_costly,
    too_costly_to_parse,
)

ESTIMATE_SECONDS = 1.0  # the estimate is one regex step per tag (~1 us)


def test_few_tags_cost_nothing() -> None:
    assert parse_work("<div>" * SAFE_TAG_COUNT) == 0
    assert not too_costly_to_parse("<p>hello</p>")


def test_nesting_is_charged_by_depth() -> None:
    deep = "<div>" * (SAFE_TAG_COUNT + 1)
    n = SAFE_TAG_COUNT + 1
    assert parse_work(deep) == n * (n - 1) // 2
    assert too_costly("<div>" * 10_000)


def test_closed_siblings_stay_cheap() -> None:
    # Linear: each end tag walks one entry; a <p> finds one open <p> and closes it.
    assert parse_work("<div>x</div>" * 50_000) == 50_000
    assert parse_work("<p>x" * 50_000) == 2 * 50_000 - 2
    assert not too_costly("<table>" + "<tr><td>x</td></tr>" * 50_000 + "</table>")


@pytest.mark.parametrize("hidden", [
    "<!--" + "<div>" * 20_000 + "-->",
    "<script>" + "<div>" * 20_000 + "</script>",
    "<textarea>" + "<div>" * 20_000 + "</textarea>",
])
def test_tags_inside_comments_and_raw_text_are_text(hidden: str) -> None:
    assert parse_work(hidden) < 10


def test_a_tag_with_many_distinct_attributes_is_charged_quadratically() -> None:
    tag = "<a " + " ".join(f"a{i}=1" for i in range(40_000)) + ">"
    assert parse_work(tag) >= 40_000 * 40_000 // 2 > MAX_PARSE_WORK
    repeated = "<a " + " x=1" * 40_000 + ">"  # one name: nothing to compare
    assert parse_work(repeated) < 10


def test_formatting_left_open_is_charged_per_block() -> None:
    markup = "<b>" * 100 + "<p>x</p>" * 3000
    assert reconstruct_work(markup) > MAX_RECONSTRUCT_WORK
    assert too_costly_to_parse(markup) and not too_costly(markup)
    assert reconstruct_work("<b>x</b>" * 3000) == 2 * 3000  # one open at a time, per tag


def test_the_estimate_itself_is_fast_on_a_megabyte() -> None:
    markup = "<div>" * 200_000
    start = time.perf_counter()
    assert too_costly(markup)
    assert time.perf_counter() - start < ESTIMATE_SECONDS
