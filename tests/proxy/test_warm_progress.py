"""Pacing with an injected clock (no sleeps), the resume file and the progress display."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from popproxy.proxy.warm_progress import (
    PROGRESS_FILE,
    Display,
    Pace,
    ProgressFile,
    Totals,
    read_users,
)


def test_message_rate_spaces_downloads() -> None:
    pace = Pace(messages_per_s=10, octets_per_s=None)
    assert pace.wait(0.0) == 0.0  # nothing booked yet
    pace.charge(0.0, 1, 50_000)
    assert pace.wait(0.02) == pytest.approx(0.08)
    assert pace.wait(0.5) == 0.0
    pace.charge(0.1, 1, 0)  # began as soon as allowed
    assert pace.wait(0.1) == pytest.approx(0.1)


def test_the_slower_of_both_rates_wins() -> None:
    pace = Pace(messages_per_s=100, octets_per_s=1_000_000)
    pace.charge(0.0, 1, 2_000_000)  # a 2 MB message: 2 s of the octet budget
    assert pace.wait(0.0) == pytest.approx(2.0)


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    pace = Pace(messages_per_s=1, octets_per_s=None)
    pace.charge(0.0, 1, 0)
    pace.charge(100.0, 1, 0)  # a long listing in between
    assert pace.wait(100.0) == pytest.approx(1.0)


def test_cache_hits_cost_nothing_and_unlimited_never_waits() -> None:
    paced, free = Pace(5, 1000), Pace(None, None)
    paced.charge(0.0, 0, 0)
    free.charge(0.0, 1000, 10**9)
    assert paced.wait(0.0) == 0.0 and free.wait(0.0) == 0.0


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pace(-1, None)


def test_progress_file_resumes_and_fresh_forgets(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ProgressFile(state)
    assert "aa11" not in first
    first.record("aa11")
    assert "aa11" in first
    assert stat.S_IMODE((state / PROGRESS_FILE).stat().st_mode) == 0o600
    assert "aa11" in ProgressFile(state)  # the next run
    assert "aa11" not in ProgressFile(state, fresh=True)
    assert not (state / PROGRESS_FILE).exists()


def test_plain_lines_off_a_terminal_and_a_bar_on_one() -> None:
    totals = Totals(users=2, messages=4, messages_done=1, downloaded=1, octets=2_500_000)
    plain, tty = io.StringIO(), io.StringIO()
    for stream, is_tty in ((plain, False), (tty, True)):
        display = Display(stream, is_tty)
        display.tick(totals)
        display.mailbox(totals, "mailbox 1/2", "4 messages judged (1 downloaded)")
    assert plain.getvalue() == ("mailbox 1/2: 4 messages judged (1 downloaded); run so far: "
                                "1 downloaded, 2.5 MB read\n")
    assert tty.getvalue().startswith("\r[#######-----------------------] 1/4 messages, "
                                     "mailbox 1/2, 2.5 MB read\r\033[K")


def test_user_list_skips_blanks_and_comments() -> None:
    assert read_users(["alice\n", "\n", "# team b\n", "  bob  \n"]) == ["alice", "bob"]
