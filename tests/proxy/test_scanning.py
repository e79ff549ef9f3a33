"""``ScanService`` and its helpers (``proxy/scanning.py``): the verdict generation, what a
message that could not be judged becomes, and the sweep of spools left by dead processes.

The generation a verdict is judged under: equal wherever instances would judge alike.

Instances share verdicts only under equal generations, so the generation must ignore what may
differ per instance without changing what a client receives (Redis address, verdict TTL,
quarantine directory, feed file mtimes) and change with everything else.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from popproxy.policy import Scan
from popproxy.proxy import verdict_levels
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import MIN_WORKERS, ScanService, default_workers
from popproxy.proxy.spool import sweep_stale_spools
from popproxy.proxy.verdict_cache import CACHE_FILE, CachedVerdict, VerdictCache
from popproxy.scan import Verdict
from popproxy.scan.evidence import Evidence

FEED = "# phishing hosts\nlogin.example-bank.test\n"


def _generation(tmp_path: Path, **settings: Any) -> str:
    service = ScanService(Scan(**settings), tmp_path / "state", Observer())

    async def run() -> str:
        try:
            return await service.generation()
        finally:
            await service.aclose()

    return asyncio.run(run())


def _feed(path: Path, text: str, mtime: float) -> Path:
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def test_settings_that_do_not_change_the_delivered_message_are_left_out(
        tmp_path: Path) -> None:
    base = _generation(tmp_path)
    assert _generation(tmp_path, redis_url="redis://10.0.7.31/0", verdict_ttl=120,
                       quarantine_dir=tmp_path / "elsewhere") == base
    assert _generation(tmp_path, subject_prefix="[PHISH?]") != base
    assert _generation(tmp_path, thresholds={"tag": 3.0}) != base


def test_feeds_count_by_content_not_by_mtime(tmp_path: Path) -> None:
    # Two hosts' copies of one feed, fetched an hour apart, at the same path: here, two runs.
    feed = tmp_path / "feed.txt"
    _feed(feed, FEED, 1_700_000_000)
    early = _generation(tmp_path, feeds=[feed])
    _feed(feed, FEED, 1_700_003_600)
    assert _generation(tmp_path, feeds=[feed]) == early
    _feed(feed, FEED + "evil.example.test\n", 1_700_007_200)
    assert _generation(tmp_path, feeds=[feed]) != early


def test_a_feed_changing_while_running_changes_the_generation(tmp_path: Path) -> None:
    feed = _feed(tmp_path / "feed.txt", FEED, 1_700_000_000)
    service = ScanService(Scan(feeds=(feed,)), tmp_path / "state", Observer())

    async def run() -> list[str]:
        try:
            seen = [await service.generation()]
            _feed(feed, FEED, 1_700_000_100)  # touched, same content
            seen.append(await service.generation())
            _feed(feed, FEED + "evil.example.test\n", 1_700_000_200)
            seen.append(await service.generation())
            feed.unlink()  # the hosts loaded last stay in use, but it is judged again
            seen.append(await service.generation())
            return seen
        finally:
            await service.aclose()

    first, touched, changed, missing = asyncio.run(run())
    assert touched == first
    assert len({first, changed, missing}) == 3


def test_a_new_render_version_changes_the_generation(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrading to action code that renders other bytes must not reuse cached sizes."""
    before = _generation(tmp_path)
    monkeypatch.setattr("popproxy.proxy.scanning.RENDER_VERSION", 10**6)
    assert _generation(tmp_path) != before


# ------------------------------------------------------------------ unjudged messages
@pytest.mark.parametrize(("settings", "expected"), [
    ({}, "defang"),  # fail open (default): delivered defanged, never as it is
    ({"fail_open_action": "tag"}, "tag"),
    ({"fail_mode": "closed"}, "quarantine"),
])
def test_a_message_that_could_not_be_judged_is_never_passed(
        tmp_path: Path, settings: dict[str, Any], expected: str) -> None:
    async def run() -> tuple[str, str]:
        service = ScanService(Scan(**settings), tmp_path / "state", Observer())
        try:
            unjudged = Verdict(action="unscanned", score=0.0, cause="time-budget")
            judged = Verdict(action="tag", score=5.0)
            return service.final_action(unjudged), service.final_action(judged)
        finally:
            await service.aclose()

    assert asyncio.run(run()) == (expected, "tag")


def test_only_scanner_errors_are_judged_again() -> None:
    assert ScanService.transient(Verdict(action="unscanned", score=0.0, cause="error"))
    assert not ScanService.transient(Verdict(action="unscanned", score=0.0, cause="time-budget"))
    assert not ScanService.transient(Verdict(action="pass", score=0.0))


def test_at_least_two_workers_by_default() -> None:
    assert default_workers() >= MIN_WORKERS == 2
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(cpu_share=cpus * 4) == MIN_WORKERS  # proxy workers share the CPUs
    assert default_workers(cpu_share=1) == max(MIN_WORKERS, cpus)


# ------------------------------------------------------------------ spools of dead processes
def test_sweep_removes_only_the_spools_of_processes_that_are_gone(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process now
    dead = tmp_path / f"{gone.pid}-abc"
    mine = tmp_path / f"{os.getpid()}-def"
    other = tmp_path / "notes"
    for path in (dead, mine, other):
        (path / "1.eml").parent.mkdir()
        (path / "1.eml").write_bytes(b"Subject: held\r\n\r\nmail\r\n")
    assert sweep_stale_spools(tmp_path) == [dead]
    assert not dead.exists() and mine.exists() and other.exists()
    assert sweep_stale_spools(tmp_path / "missing") == []


def test_re_scoring_runs_once_per_distinct_evidence_and_generation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = ScanService(Scan(), tmp_path / "state", Observer())
    calls: list[Evidence] = []
    real = service.scanner.rescore

    def counted(kept: Evidence) -> Verdict:
        calls.append(kept)
        return real(kept)

    monkeypatch.setattr(service.scanner, "rescore", counted)
    plain = CachedVerdict("pass", 0.0, (), 10, 0.0, "aaaa-1",
                          evidence=Evidence(features={"text.chars": 0.5}))
    other = CachedVerdict("pass", 0.0, (), 10, 0.0, "aaaa-1",
                          evidence=Evidence(features={"text.chars": 0.7}))
    try:
        carried = [service.rescored(entry, generation) for entry, generation in
                   ((plain, "aaaa-2"), (plain, "aaaa-2"), (other, "aaaa-2"), (plain, "aaaa-3"))]
    finally:
        service.close()
    assert carried == [plain.carried_to("aaaa-2"), plain.carried_to("aaaa-2"),
                       other.carried_to("aaaa-2"), plain.carried_to("aaaa-3")]
    # The second is remembered; other evidence, or another generation, is scored again.
    assert calls == [plain.evidence, other.evidence, plain.evidence]


def test_quarantine_retention_at_start_then_hourly(tmp_path: Path) -> None:
    """Issue 19 item 10: scan.quarantine_retention removes old held messages at start, then at
    most once per RETENTION_INTERVAL (a session's first listing triggers it)."""
    from popproxy.proxy.scanning import RETENTION_INTERVAL
    from popproxy.quarantine import HeldMessage, QuarantineStore

    day, now = 86400.0, [100 * 86400.0]
    store = QuarantineStore(tmp_path / "state" / "quarantine")

    def held(message_id: str, at: float) -> None:
        store.hold(HeldMessage(message_id, "alice", at, 9.0, ("r",), 4), b"mail")

    held("aa", now[0] - 31 * day)
    held("bb", now[0] - 29 * day)
    service = ScanService(Scan(quarantine_retention="30d"), tmp_path / "state", Observer(),
                          clock=lambda: now[0])
    try:
        assert [h.id for h in store.list()] == ["bb"]  # at start
        now[0] += 2 * day  # bb is now 31 days old
        held("cc", now[0] - 40 * day)
        assert sorted(service.apply_retention()) == ["bb", "cc"]
        now[0] += RETENTION_INTERVAL / 2
        held("dd", now[0] - 40 * day)
        asyncio.run(service.generation())  # within the interval: not yet
        assert [h.id for h in store.list()] == ["dd"]
        now[0] += RETENTION_INTERVAL
        asyncio.run(service.generation())
        assert store.list() == []
    finally:
        service.close()
    held("ee", 0.0)
    kept = ScanService(Scan(), tmp_path / "state", Observer())  # unset: nothing removed
    try:
        assert kept.apply_retention() == [] and [h.id for h in store.list()] == ["ee"]
    finally:
        kept.close()


def test_the_listing_budget_is_exported_for_the_alert(tmp_path: Path) -> None:
    observer = Observer()
    service = ScanService(Scan(listing_budget=7.5), tmp_path / "state", observer)
    service.close()
    registry = observer.metrics.registry
    assert registry.get_sample_value("popproxy_scan_listing_budget_seconds") == 7.5


def test_a_big_loaded_cache_is_frozen_out_of_gc_walks_until_the_last_service_closes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verdict_levels, "FREEZE_LOADED_ENTRIES", 2)
    state = tmp_path / "state"
    state.mkdir()
    cache = VerdictCache(state / CACHE_FILE)
    for n in range(2):
        cache.put(f"k{n}", CachedVerdict("pass", 0.0, (), 10, time.time(), "gen"))
    gc.unfreeze()
    first = ScanService(Scan(), state, Observer())
    assert gc.get_freeze_count() > 0  # the loaded entries are no longer walked by gc
    reloaded = ScanService(Scan(), state, Observer())  # a policy reload: both open a while
    first.close()
    assert gc.get_freeze_count() > 0  # the new service's entries stay frozen
    reloaded.close()
    assert gc.get_freeze_count() == 0  # collectable again
    small = ScanService(Scan(), tmp_path / "other", Observer())  # below the bound: no freeze
    assert gc.get_freeze_count() == 0
    small.close()
