"""``proxy/verdict_cache.py``: message identity, the stored record, persistence across
restarts, and bounds.

The local verdict level stays bounded: verdicts expire after the TTL (as in Redis), the file
is rewritten once it is mostly dead lines, and with Redis holding every verdict this process
keeps only the newest MAX_LOCAL_WITH_SHARED."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TextIO

import pytest

from popproxy.proxy import verdict_cache
from popproxy.proxy.lockout_store import connect_redis
from popproxy.proxy.redis_client import connect_url
from popproxy.proxy.verdict_cache import (
    CachedVerdict,
    RedisVerdicts,
    VerdictCache,
    cache_key,
    from_record,
    to_record,
)
from popproxy.proxy.verdict_journal import carried_line, open_private
from popproxy.scan.evidence import Evidence

DAY = 86400.0


def _verdict(scanned_at: float) -> CachedVerdict:
    return CachedVerdict("pass", 0.0, (), 100, scanned_at, "gen")


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_verdicts_expire_after_the_ttl_in_memory_and_on_load(tmp_path: Path) -> None:
    wall, path = Wall(), tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path, ttl=7 * DAY, wall_clock=wall)
    cache.put("old", _verdict(wall.now - 6 * DAY))
    cache.put("new", _verdict(wall.now))
    assert cache.get("old") is not None
    wall.now += 2 * DAY  # "old" is now 8 days old
    assert cache.get("old") is None and cache.get("new") is not None
    again = VerdictCache(path, ttl=7 * DAY, wall_clock=wall)
    assert again.get("old") is None and again.get("new") == _verdict(wall.now - 2 * DAY)
    assert asyncio.run(again.lookup("old", "gen")) is None  # judged again, like in Redis


def test_a_mostly_dead_file_is_rewritten_on_load(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_cache, "SWEEP_EVERY", 10)
    wall, path = Wall(), tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path, ttl=DAY, wall_clock=wall)
    for n in range(50):
        cache.put(f"k{n}", _verdict(wall.now - 2 * DAY if n < 45 else wall.now))
    lines = len(path.read_text().splitlines())
    assert lines < 50  # already compacted while running (sweeps every SWEEP_EVERY puts)
    reloaded = VerdictCache(path, ttl=DAY, wall_clock=wall)
    assert len(reloaded) == 5
    assert len(path.read_text().splitlines()) <= 2 * 5 + 10
    assert all(reloaded.get(f"k{n}") is not None for n in range(45, 50))
    assert not path.with_name(path.name + ".tmp").exists()


def test_the_last_line_for_a_key_wins(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path)
    cache.put("k", _verdict(1.0))
    cache.put("k", CachedVerdict("tag", 5.0, ("x",), 120, 2.0, "gen"))
    assert VerdictCache(path).get("k") == CachedVerdict("tag", 5.0, ("x",), 120, 2.0, "gen")


def test_with_redis_only_the_newest_verdicts_stay_local(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_cache, "MAX_LOCAL_WITH_SHARED", 3)

    async def run() -> VerdictCache:
        # Never contacted here.
        shared = RedisVerdicts(connect_url("redis://127.0.0.1:1/0"), ttl=DAY)
        cache = VerdictCache(tmp_path / "verdicts.jsonl", shared)
        for n in range(5):
            cache.put(f"k{n}", _verdict(float(n)))
        await shared.close()
        return cache

    cache = asyncio.run(run())
    assert len(cache) == 3
    assert [cache.get(f"k{n}") is not None for n in range(5)] == [False, False, True, True, True]


# ------------------------------------------------------------------ identity and records
def test_the_key_holds_the_listed_size_so_a_reused_uidl_is_judged_anew() -> None:
    key = cache_key("default", "Alice", b"uid-1", 1200)
    assert key == cache_key("default", "alice", b"uid-1", 1200)  # user names fold case
    assert key != cache_key("default", "alice", b"uid-1", 1201)  # RFC 1939 s5: LIST == RETR
    assert key != cache_key("other", "alice", b"uid-1", 1200)
    assert key != cache_key("default", "bob", b"uid-1", 1200)


def test_records_round_trip_without_the_per_session_flags() -> None:
    entry = CachedVerdict("tag", 7.5, ("lookalike domain",), 2048, 1_000_000.0, "gen",
                          signals=("lookalike",), transient=True, released=True)
    record = to_record(entry)
    assert "transient" not in record and "released" not in record
    assert "quarantine_id" not in record  # empty optional fields are left out
    assert from_record(record) == CachedVerdict("tag", 7.5, ("lookalike domain",), 2048,
                                                1_000_000.0, "gen", signals=("lookalike",))


@pytest.mark.parametrize("damage", [
    {"action": "deliver-anyway"}, {"size": -1}, {"size": "12"}, {"reasons": [3]},
])
def test_a_damaged_record_is_refused(damage: dict[str, object]) -> None:
    record = {**to_record(_verdict(1_000_000.0)), **damage}
    with pytest.raises(ValueError):
        from_record(record)


def test_verdicts_survive_a_restart_in_a_private_file(tmp_path: Path) -> None:
    path, wall = tmp_path / "verdicts.jsonl", Wall()
    VerdictCache(path, wall_clock=wall).put("k1", _verdict(wall.now))
    assert path.stat().st_mode & 0o777 == 0o600  # user names' mail verdicts: owner only
    with path.open("a") as handle:
        handle.write("not json\n")  # a torn last line from a crash
    again = VerdictCache(path, wall_clock=wall)
    assert again.get("k1") == _verdict(wall.now)
    assert again.get("k2") is None and len(again) == 1


# ---------------------------------------------------------------- evidence, stale, forgetting
STALE_GEN, NEW_GEN = "aaaaaaaaaaaa-111111111111", "aaaaaaaaaaaa-222222222222"


def _with_evidence(mailbox: str = "box1") -> CachedVerdict:
    kept = Evidence((("link-shortener", "bit.ly"),), ("bit.ly",), {"url.count": 1.0})
    return CachedVerdict("tag", 4.0, ("link-shortener (bit.ly)",), 321, 1_000_000.0, STALE_GEN,
                         evidence=kept, mailbox=mailbox)


def test_evidence_and_mailbox_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    VerdictCache(path).put("k", _with_evidence())
    assert VerdictCache(path).get("k") == _with_evidence()
    assert '"evidence": {"s": [["link-shortener", "bit.ly"]]' in path.read_text()


def test_a_verdict_of_another_evidence_generation_is_returned_stale(tmp_path: Path) -> None:
    results: list[str] = []
    cache = VerdictCache(None, on_result=lambda result, count: results.extend([result] * count))
    cache.put("k", _with_evidence())
    assert asyncio.run(cache.lookup("k", NEW_GEN)) == _with_evidence()  # the caller re-scores
    assert asyncio.run(cache.lookup("k", "bbbbbbbbbbbb-222222222222")) is None  # message part
    assert asyncio.run(cache.lookup("k", STALE_GEN)) == _with_evidence()
    assert results == ["stale", "miss", "local_hit"]


def test_a_listings_local_hits_are_counted_in_one_call() -> None:
    """One counter update per listing, not one per message (issue 18: CPU per login)."""
    calls: list[tuple[str, int]] = []
    cache = VerdictCache(None, on_result=lambda result, count: calls.append((result, count)))
    for key in ("k1", "k2", "k3"):
        cache.put(key, _with_evidence())
    found = asyncio.run(cache.lookup_many(["k1", "k2", "k3", "k4"], STALE_GEN))
    assert sorted(found) == ["k1", "k2", "k3"]
    assert calls == [("local_hit", 3), ("miss", 1)]


def test_entries_of_messages_no_longer_listed_are_forgotten_across_restarts(
        tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path)
    for key in ("k1", "k2", "k3"):
        cache.put(key, _with_evidence())
    cache.put("other", _with_evidence("box2"))
    assert sorted(cache.forget_unlisted("box1", {"k2"})) == ["k1", "k3"]
    assert cache.forget_unlisted("box1", {"k2"}) == []
    again = VerdictCache(path)
    assert [again.get(k) is not None for k in ("k1", "k2", "k3", "other")] == [
        False, True, False, True]
    assert len(again) == 2


# ---------------------------------------------------------------- carried over, batched
def _carry_all(cache: VerdictCache, keys: list[str]) -> None:
    for key in keys:
        cache.carry(key, _with_evidence().carried_to(NEW_GEN), STALE_GEN)


def test_verdicts_carried_over_in_a_listing_are_written_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, keys = tmp_path / "verdicts.jsonl", [f"k{i}" for i in range(100)]
    cache = VerdictCache(path)
    for key in keys:
        cache.put(key, _with_evidence())
    opens: list[str] = []
    real_open = open_private

    def counted(p: Path, mode: str) -> TextIO:
        opens.append(mode)
        return real_open(p, mode)

    monkeypatch.setattr(verdict_cache, "open_private", counted)
    _carry_all(cache, keys)
    assert opens == [] and cache.get("k7") == _with_evidence().carried_to(NEW_GEN)
    cache.flush()
    cache.flush()  # nothing pending: no write
    assert opens == ["a"] and len(path.read_text().splitlines()) == 101
    again = VerdictCache(path)
    assert all(again.get(key) == _with_evidence().carried_to(NEW_GEN) for key in keys)


def test_a_crash_before_the_flush_leaves_verdicts_a_later_session_re_scores(
        tmp_path: Path) -> None:
    # Not written yet when the process dies: the file still has them under the old
    # generation, which a lookup returns stale, to be re-scored again (no download).
    path = tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path)
    cache.put("k", _with_evidence())
    _carry_all(cache, ["k"])
    after_crash = VerdictCache(path)
    assert asyncio.run(after_crash.lookup("k", NEW_GEN)) == _with_evidence()


def test_a_carried_line_never_overrides_a_newer_verdict(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path)
    for key in ("judged", "forgotten", "other"):
        cache.put(key, _with_evidence())
    _carry_all(cache, ["judged", "forgotten"])
    judged = CachedVerdict("quarantine", 12.0, ("x",), 99, 1_000_000.0, NEW_GEN, mailbox="box1")
    cache.put("judged", judged)  # judged anew after it was carried, before the flush
    assert cache.forget_unlisted("box1", {"judged", "other"}) == ["forgotten"]
    cache.flush()
    assert '"carried"' not in path.read_text()  # nothing left to carry
    # Only entries of the old generation move: another process's newer line stays as it is.
    with path.open("a") as handle:
        handle.write(carried_line(STALE_GEN, "aaaaaaaaaaaa-333333333333", ["judged", "other"]))
    again = VerdictCache(path)
    assert again.get("judged") == judged and again.get("forgotten") is None
    assert again.get("other") == _with_evidence().carried_to("aaaaaaaaaaaa-333333333333")


def test_a_long_listing_is_written_every_max_pending_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_cache, "MAX_PENDING", 10)
    path, keys = tmp_path / "verdicts.jsonl", [f"k{i}" for i in range(25)]
    cache = VerdictCache(path)
    for key in keys:
        cache.put(key, _with_evidence())
    _carry_all(cache, keys)
    assert path.read_text().count('"carried"') == 2  # 20 written, 5 pending (bounded loss)
    cache.flush()
    again = VerdictCache(path)
    assert all(again.get(key) == _with_evidence().carried_to(NEW_GEN) for key in keys)


def test_a_failed_flush_is_logged_not_raised(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    # Flushed when a session ends: a full disk must not break the session's close, and what
    # is lost is only re-scoring (the test above).
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cache = VerdictCache(blocker / "verdicts.jsonl")
    _carry_all(cache, ["k"])
    cache.flush()
    assert cache.get("k") == _with_evidence().carried_to(NEW_GEN)
    assert "cannot append" in caplog.text


class CountingShared(RedisVerdicts):
    """The shared level in a dict, counting round trips (get_many/put_many calls)."""

    def __init__(self) -> None:
        super().__init__(connect_redis("redis://127.0.0.1:1/0"), ttl=DAY)  # never contacted
        self.stored: dict[str, CachedVerdict] = {}
        self.trips: list[tuple[str, int]] = []

    async def get_many(self, keys: list[str]) -> dict[str, CachedVerdict]:
        self.trips.append(("get", len(keys)))
        return {key: self.stored[key] for key in keys if key in self.stored}

    async def put_many(self, items: list[tuple[str, CachedVerdict]]) -> None:
        self.trips.append(("put", len(items)))
        self.stored.update(items)


def test_a_listing_batch_costs_one_shared_round_trip_each_way(tmp_path: Path) -> None:
    shared = CountingShared()
    results: list[str] = []
    cache = VerdictCache(tmp_path / "verdicts.jsonl", shared, lambda r, n: results.extend([r] * n))
    cache.put("local-current", _with_evidence().carried_to(NEW_GEN))
    cache.put("local-stale", _with_evidence())
    shared.stored["shared-current"] = _with_evidence().carried_to(NEW_GEN)
    keys = ["local-current", "local-stale", "shared-current", "nowhere"]

    async def run() -> dict[str, CachedVerdict]:
        found = await cache.lookup_many(keys, NEW_GEN)
        await cache.store_many([("local-stale", _with_evidence().carried_to(NEW_GEN), STALE_GEN),
                                ("nowhere", _verdict(1.0), ""),
                                ("transient", CachedVerdict("pass", 0, (), 1, 1.0, NEW_GEN,
                                                            transient=True), "")])
        await shared.close()
        return found

    found = asyncio.run(run())
    # One GET round trip for the three keys without a current local verdict, one SET for the
    # two kept (a transient verdict is shared with nobody).
    assert shared.trips == [("get", 3), ("put", 2)]
    assert found == {"local-current": _with_evidence().carried_to(NEW_GEN),
                     "local-stale": _with_evidence(),  # stale: the caller re-scores it
                     "shared-current": _with_evidence().carried_to(NEW_GEN)}
    assert results == ["local_hit", "stale", "shared_hit", "miss"]
    assert cache.get("shared-current") is not None  # copied here: no round trip next time
    assert set(shared.stored) == {"local-stale", "nowhere", "shared-current"}
    assert cache.get("local-stale") == _with_evidence().carried_to(NEW_GEN)


def test_equal_evidence_loaded_from_the_file_is_one_object(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    cache = VerdictCache(path)
    for key in ("k1", "k2"):
        cache.put(key, _with_evidence())
    cache.put("k3", CachedVerdict("pass", 0.0, (), 1, 1_000_000.0, STALE_GEN,
                                  evidence=Evidence((), ("other.test",), {})))
    again = VerdictCache(path)
    first, second, other = (again.get(k) for k in ("k1", "k2", "k3"))
    assert first is not None and second is not None and other is not None
    assert first.evidence is second.evidence and first.evidence == _with_evidence().evidence
    assert other.evidence is not first.evidence
