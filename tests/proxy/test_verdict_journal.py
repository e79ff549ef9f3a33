"""``proxy/verdict_journal.py``: carried-over verdicts batched into one line per generation
pair, and the private file mode.  The cache's use of it (one write per listing, what a crash
loses) is tested in tests/proxy/test_verdict_cache.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popproxy.proxy.verdict_journal import (
    CarriedBatch,
    carried_line,
    open_private,
    parse_carried,
)

OLD, NEW, OTHER = "aaaaaaaaaaaa-111111111111", "aaaaaaaaaaaa-222222222222", "bbbbbbbbbbbb-1"


def test_keys_carried_between_the_same_generations_share_one_line() -> None:
    batch = CarriedBatch()
    for key in ("k1", "k2", "k3"):
        batch.add(key, OLD, NEW)
    batch.add("k4", OTHER, NEW)
    lines, count = batch.take(lambda key, generation: True)
    assert count == 4 and len(batch) == 0
    assert [json.loads(line) for line in lines] == [
        {"carried": NEW, "from": OLD, "keys": ["k1", "k2", "k3"]},
        {"carried": NEW, "from": OTHER, "keys": ["k4"]}]


def test_keys_no_longer_current_or_discarded_are_left_out() -> None:
    batch = CarriedBatch()
    for key in ("k1", "k2", "k3"):
        batch.add(key, OLD, NEW)
    batch.discard("k2")  # replaced by a full line, or forgotten
    lines, count = batch.take(lambda key, generation: key != "k3")
    assert count == 1 and [json.loads(line)["keys"] for line in lines] == [["k1"]]
    assert batch.take(lambda key, generation: True) == ([], 0)


def test_a_carried_line_parses_back() -> None:
    old, new, keys = parse_carried(json.loads(carried_line(OLD, NEW, ["k1", "k2"])))
    assert (old, new, list(keys)) == (OLD, NEW, ["k1", "k2"])


@pytest.mark.parametrize("record", [
    {"carried": NEW, "keys": ["k1"]},
    {"carried": NEW, "from": OLD, "keys": "k1"},
    {"carried": 1, "from": OLD, "keys": ["k1"]},
])
def test_a_damaged_carried_line_is_refused(record: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse_carried(record)


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "verdicts.jsonl"
    with open_private(path, "a") as handle:
        handle.write("x\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
