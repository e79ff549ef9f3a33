"""Scan workers that die or cannot start are not blamed on the message (review of issue 14).

Real worker processes.  A worker killed while idle (the OOM killer, an admin) used to be reused:
the next job failed as a "crash", which is cached as a suspicious verdict for scan.verdict_ttl,
so a clean message was delivered defanged for a week.  A worker that could not start (a feed
file briefly missing) raised something other than JobFailed and cut the session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import Scan
from popproxy.proxy.observe import Observer
from popproxy.proxy.scan_pool import WORKER_COMMAND, JobFailed, ScanPool
from popproxy.proxy.scanning import ScanService
from tests.scan.helpers import build

CLEAN = build(text="Lunch at noon?")
FEED_LINK = build(html='<a href="http://evil.example/">x</a>')
DEADLINE = 20.0  # generous: a cold worker on a busy box; nothing here waits for it to pass
FLAKY = (sys.executable, "-m", "tests.proxy.flaky_worker")
NOT_STARTING = (sys.executable, "-c", "import sys; sys.exit(3)")


def _pool(kills: list[str], command: Sequence[str] = WORKER_COMMAND,
          **settings: Any) -> ScanPool:
    return ScanPool(Scan(**settings).model_dump(mode="json"), 1, kills.append, command)


async def _scan(pool: ScanPool, spool: Path, message: bytes = CLEAN) -> dict[str, Any]:
    spool.write_bytes(message)
    return await pool.call({"op": "scan", "in": str(spool)}, b"", DEADLINE)


def _scan_once_with(command: Sequence[str], tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """One clean message through a fresh pool of ``command`` workers: answer and kills."""
    async def run() -> tuple[dict[str, Any], list[str]]:
        kills: list[str] = []
        pool = _pool(kills, command)
        try:
            return await _scan(pool, tmp_path / "m"), kills
        finally:
            await pool.aclose()

    return asyncio.run(run())


def test_worker_killed_while_idle_is_replaced_not_blamed(tmp_path: Path) -> None:
    async def run() -> tuple[dict[str, Any], list[str]]:
        kills: list[str] = []
        pool = _pool(kills)
        try:
            await _scan(pool, tmp_path / "m")
            (idle,) = pool._idle
            os.kill(idle.proc.pid, signal.SIGKILL)
            await idle.proc.wait()
            return await _scan(pool, tmp_path / "m"), kills
        finally:
            await pool.aclose()

    answer, kills = asyncio.run(run())
    assert answer["verdict"]["action"] == "pass"
    assert kills == ["crash"]  # the dead worker is counted, the message is not charged


def test_worker_dying_once_mid_job_is_retried_on_a_fresh_worker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPPROXY_TEST_CRASH_ONCE", str(tmp_path / "crashed"))

    answer, kills = _scan_once_with(FLAKY, tmp_path)
    assert (tmp_path / "crashed").exists()
    assert answer["verdict"]["action"] == "pass"
    assert kills == ["crash"]


def test_message_that_kills_every_worker_is_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPPROXY_TEST_CRASH_ON", "POISON")

    async def run() -> tuple[str, list[str], dict[str, Any]]:
        kills: list[str] = []
        pool = _pool(kills, FLAKY)
        try:
            with pytest.raises(JobFailed) as failed:
                await _scan(pool, tmp_path / "m", build(text="POISON"))
            after = await _scan(pool, tmp_path / "m")  # the pool still serves
            return failed.value.reason, kills, after
        finally:
            await pool.aclose()

    reason, kills, after = asyncio.run(run())
    assert reason == "crash"
    assert kills == ["crash", "crash"]  # tried twice: once on a fresh worker
    assert after["verdict"]["action"] == "pass"


def test_worker_that_cannot_start_is_unavailable_not_an_exception(tmp_path: Path) -> None:
    async def run() -> str:
        pool = _pool([], NOT_STARTING)
        try:
            with pytest.raises(JobFailed) as failed:
                await _scan(pool, tmp_path / "m")
            return failed.value.reason
        finally:
            await pool.aclose()

    assert asyncio.run(run()) == "unavailable"


def test_no_worker_gives_a_transient_verdict_judged_again_later(tmp_path: Path) -> None:
    async def run() -> tuple[str, str | None, bool]:
        service = ScanService(Scan(), tmp_path / "state", Observer(Metrics()),
                              worker_command=NOT_STARTING)
        try:
            spool = tmp_path / "m"
            spool.write_bytes(CLEAN)
            verdict = await service.judge(spool)
            return verdict.action, verdict.cause, service.transient(verdict)
        finally:
            await service.aclose()

    action, cause, transient = asyncio.run(run())
    assert (action, cause, transient) == ("unscanned", "error", True)


def test_worker_starts_while_a_feed_file_is_missing(tmp_path: Path) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("evil.example\n")
    settings = Scan(feeds=(feed,)).model_dump(mode="json")
    feed.unlink()  # replaced non-atomically while the proxy runs

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        pool = ScanPool(settings, 1, lambda reason: None)
        try:
            before = await _scan(pool, tmp_path / "m", FEED_LINK)
            feed.write_text("evil.example\n")  # back: loaded at the next scan's refresh
            after = await _scan(pool, tmp_path / "m", FEED_LINK)
            return before, after
        finally:
            await pool.aclose()

    before, after = asyncio.run(run())
    assert not any("feed" in reason for reason in before["verdict"]["reasons"]), before
    assert any("feed" in reason for reason in after["verdict"]["reasons"]), after


def test_a_library_printing_to_stdout_does_not_break_the_protocol(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPPROXY_TEST_PRINT", "1")

    answer, kills = _scan_once_with(FLAKY, tmp_path)
    assert answer["verdict"]["action"] == "pass"
    assert kills == []


def test_spools_of_stopped_processes_are_removed_at_start(tmp_path: Path) -> None:
    """A proxy killed mid-session leaves copies of mail in its spool: the next start removes
    them; a live process's spool (a reload of this one) stays."""
    spool = tmp_path / "state" / "spool"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = spool / f"{gone.stdout.strip()}-0123456789abcdef"
    live = spool / f"{os.getpid()}-fedcba9876543210"
    for directory in (stale, live):
        directory.mkdir(parents=True)
        (directory / "1").write_bytes(b"a copy of someone's mail")

    async def run() -> None:
        service = ScanService(Scan(), tmp_path / "state", Observer(Metrics()))
        await service.aclose()

    asyncio.run(run())
    assert not stale.exists()
    assert (live / "1").exists()
