"""Which levels a verdict cache gets: file, host file or Redis; and the GC freeze bookkeeping."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from popproxy.policy import Scan
from popproxy.proxy import verdict_levels
from popproxy.proxy.store_sqlite import SqliteVerdicts
from popproxy.proxy.verdict_cache import CACHE_FILE, CachedVerdict
from popproxy.proxy.verdict_shared import RedisVerdicts


def _ignore(result: str, count: int) -> None:
    del result


def _entry() -> CachedVerdict:
    return CachedVerdict("pass", 0.0, (), 10, 1.0e9, "gen")


def test_one_process_keeps_its_file_and_no_shared_level(tmp_path: Path) -> None:
    cache = verdict_levels.open_verdict_cache(Scan(), tmp_path, None, _ignore, lambda: 1.0e9)
    cache.put("k", _entry())
    assert (tmp_path / CACHE_FILE).exists()
    assert cache._shared is None


def test_workers_share_the_host_file_and_write_no_jsonl(tmp_path: Path) -> None:
    cache = verdict_levels.open_verdict_cache(Scan(), tmp_path, tmp_path / "host.sqlite3",
                                              _ignore, lambda: 1.0e9)
    cache.put("k", _entry())
    assert isinstance(cache._shared, SqliteVerdicts)
    assert not (tmp_path / CACHE_FILE).exists()


def test_redis_wins_over_the_host_file(tmp_path: Path) -> None:
    policy = Scan(redis_url="redis://127.0.0.1:1/0")  # never contacted
    cache = verdict_levels.open_verdict_cache(policy, tmp_path, tmp_path / "host.sqlite3",
                                              _ignore, lambda: 1.0e9)
    assert isinstance(cache._shared, RedisVerdicts)


def test_freeze_only_when_big_and_released_by_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_levels, "FREEZE_LOADED_ENTRIES", 10)
    gc.unfreeze()
    assert not verdict_levels.freeze_if_big(9) and gc.get_freeze_count() == 0
    assert verdict_levels.freeze_if_big(10) and verdict_levels.freeze_if_big(11)
    verdict_levels.release_freeze()
    assert gc.get_freeze_count() > 0  # one freezer left
    verdict_levels.release_freeze()
    assert gc.get_freeze_count() == 0
