"""The host's shared SQLite file: its settings; and the supervisor's two calls for the
host-wide session slots, which live in their own table now (tests/proxy/test_host_slots.py)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from popproxy.proxy.host_slots import SessionSlots, geometry, held_on_host, slots_path
from popproxy.proxy.host_state import (
    DB_FILE,
    HostShare,
    connect,
    default_db_path,
    release_all_workers,
    release_worker,
)

MAX_SESSIONS, MAX_PER_SOURCE = 3, 2


def test_the_file_is_private_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    path = default_db_path(tmp_path / "state")
    assert path.name == DB_FILE
    db = connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert {"lockout_hits", "lockout_trusted", "verdicts"} <= tables
    assert "session_slots" not in tables  # no database write per session any more
    connect(path).close()  # a second connection finds the schema made


def test_release_worker_and_release_all_workers_act_on_the_slot_table(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    dead = SessionSlots(HostShare(db, 1, 2), MAX_SESSIONS)
    alive = SessionSlots(HostShare(db, 0, 2), MAX_SESSIONS)
    assert dead.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert alive.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    release_worker(db, 1)  # the supervisor saw worker 1 die
    assert held_on_host(db) == 1
    release_all_workers(db)  # the supervisor starting: no worker runs yet
    assert not slots_path(db).exists() and held_on_host(db) == 0
    release_worker(db, 0)  # no table: nothing held, nothing to do
    release_all_workers(db, geometry(2, MAX_SESSIONS))  # as `popproxy run` does: made empty
    assert slots_path(db).exists() and held_on_host(db) == 0
    slots_path(db).write_bytes(bytes(slots_path(db).stat().st_size))  # a maker killed
    release_worker(db, 1, geometry(2, MAX_SESSIONS))  # its restart: made again
    assert held_on_host(db) == 0  # (a valid table: held_on_host makes none)
    assert SessionSlots(HostShare(db, 1, 2), MAX_SESSIONS).acquire("10.0.0.3", MAX_SESSIONS,
                                                                    MAX_PER_SOURCE)
    assert held_on_host(db) == 1


def test_the_supervisor_makes_the_host_file_before_any_worker_opens_it(tmp_path: Path) -> None:
    """CI caught it: with the slots out of SQLite nothing made the file before the workers,
    and two of them switching a new file to WAL at once made one exit, "database is locked"."""
    db = tmp_path / "state" / DB_FILE
    release_all_workers(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT 1 FROM sqlite_master WHERE name = 'verdicts_expires'"
                           ).fetchone() is not None
    finally:
        raw.close()
