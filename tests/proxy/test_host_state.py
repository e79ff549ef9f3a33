"""The host's shared SQLite file: its settings, and the host-wide session slots."""

from __future__ import annotations

import stat
from pathlib import Path

from popproxy.proxy.host_state import (
    DB_FILE,
    HostShare,
    SessionSlots,
    connect,
    default_db_path,
    release_all_workers,
    release_worker,
)

MAX_SESSIONS, MAX_PER_SOURCE = 3, 2


def _slots(path: Path, worker: int) -> SessionSlots:
    return SessionSlots(HostShare(path, worker))


def test_the_file_is_private_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    path = default_db_path(tmp_path / "state")
    assert path.name == DB_FILE
    db = connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert connect(path).execute("SELECT count(*) FROM meta").fetchone() == (1,)  # one salt


def test_caps_hold_across_workers(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    one, two = _slots(path, 1), _slots(path, 2)
    assert one.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert two.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    # The source has its two slots, counted over both workers.
    assert not one.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert two.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not one.acquire("10.0.0.3", MAX_SESSIONS, MAX_PER_SOURCE)  # the host is full
    assert one.held() == two.held() == MAX_SESSIONS
    one.release("10.0.0.1")
    assert two.acquire("10.0.0.3", MAX_SESSIONS, MAX_PER_SOURCE)
    assert one.held() == MAX_SESSIONS


def test_release_worker_frees_the_slots_of_a_dead_worker_only(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    dead, alive = _slots(path, 1), _slots(path, 2)
    assert dead.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert dead.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    assert alive.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not alive.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
    release_worker(path, 1)  # the supervisor saw worker 1 die
    assert alive.held() == 1
    assert alive.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)


def test_a_supervisor_starting_clears_the_slots_of_ids_that_will_not_start(
        tmp_path: Path) -> None:
    """Killed with its workers, the host comes back with fewer: worker 3's rows must not keep
    part of max_sessions for ever."""
    path = tmp_path / DB_FILE
    gone = _slots(path, 3)
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert gone.acquire(source, MAX_SESSIONS, MAX_PER_SOURCE)
    release_all_workers(path)
    assert _slots(path, 0).acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
    assert gone.held() == 1


def test_a_restarted_worker_gives_back_what_its_previous_life_held(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    assert _slots(path, 1).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)  # then killed
    reborn = _slots(path, 1)
    reborn.release_all()
    assert reborn.held() == 0


def test_releases_never_go_negative_and_empty_rows_go(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    slots = _slots(path, 1)
    assert slots.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    slots.release("10.0.0.1")
    slots.release("10.0.0.1")  # a second release (a bug) must not free a slot it never had
    assert connect(path).execute("SELECT count(*) FROM session_slots").fetchone() == (0,)
    slots.close()


def test_sources_are_stored_as_keyed_hashes(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    assert _slots(path, 1).acquire("192.0.2.77", MAX_SESSIONS, MAX_PER_SOURCE)
    ((source,),) = connect(path).execute("SELECT source FROM session_slots").fetchall()
    assert "192.0.2.77" not in source and len(source) == 32
    for file in path.parent.iterdir():
        assert b"192.0.2.77" not in file.read_bytes()
