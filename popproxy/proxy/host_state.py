"""State the worker processes of one host share: one SQLite file in WAL mode, nothing to install.

With several workers on a host (issue 18), a lockout earned through one worker must hold on the
others, a verdict judged by one must be served by the others, and ``max_sessions`` /
``max_sessions_per_ip`` must hold for the host.  Redis does all of that across hosts; on one host
an embedded database does it without a server.  SQLite in WAL mode lets readers run while one
writer writes, and every write here is one short ``BEGIN IMMEDIATE`` transaction (immediate:
a read transaction that later upgrades to a write fails at once with SQLITE_BUSY in WAL mode,
without waiting for the busy handler).

The supervisor gives each worker a :class:`HostShare` (the file and the worker's number) and
calls :func:`release_worker` when a worker dies, so the session slots it held are given back.
Tables (all keyed by opaque values, never a username or an address in clear):

- ``lockout_hits``/``lockout_trusted``: :class:`~popproxy.proxy.store_sqlite.SqliteStore`
- ``verdicts``: :class:`~popproxy.proxy.store_sqlite.SqliteVerdicts`

The session slots (``max_sessions`` for the host) are not in this file any more: they cost two
write transactions per session, each handed to a thread.  They live in a table in shared
memory next to it (:mod:`popproxy.proxy.host_slots`); a file made by an earlier version keeps
an unused ``session_slots`` table.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from popproxy.proxy import host_slots

log = logging.getLogger("popproxy.host")

DB_FILE = "host.sqlite3"  # in state_dir unless the supervisor says otherwise
# How long a write waits for the other workers' writes before failing (SQLite's busy handler).
# Writes last microseconds, but a writer the OS has descheduled on a busy host holds the lock
# for a time slice or more.  Writes run off the loop, so only the session waiting for one pays;
# past this the caller's fail mode decides (lockout.fail_mode), before FailoverStore's own 1 s.
BUSY_TIMEOUT_MS = 800
# Reads run on the event loop.  In WAL mode a reader waits only in rare cases (recovering the
# WAL after a crash): then failing fast (fail mode) beats stalling every session of the worker.
READ_BUSY_TIMEOUT_MS = 20
# The first connection of workers starting together creates the schema and switches the file
# to WAL, which needs a moment of exclusive access: wait longer for that, once, at start.
SETUP_BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockout_hits (
    key TEXT NOT NULL, member TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, member)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lockout_hits_expires ON lockout_hits (expires);
CREATE TABLE IF NOT EXISTS lockout_trusted (
    key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lockout_trusted_until ON lockout_trusted (until);
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS verdicts_expires ON verdicts (expires);
"""


@dataclass(frozen=True)
class HostShare:
    """Where this host's shared state lives, and which worker this process is."""

    db_path: Path
    worker_id: int
    workers: int = 1  # the host's worker processes: they share its CPUs (scan pool sizes)


def default_db_path(state_dir: Path) -> Path:
    return state_dir / DB_FILE


def connect(db_path: Path, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with the schema in place, whose calls wait at most
    ``busy_ms`` for a lock.

    ``synchronous=NORMAL``: in WAL mode a commit then does not fsync (the WAL is synced at
    checkpoints), so a power loss may forget the last commits (failed logins, verdicts, slots:
    all cheap to lose) but never corrupts the file.
    """
    if not db_path.exists():
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # 0600 before SQLite opens it: the -wal and -shm files inherit the mode.
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT, 0o600))
    db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False,
                         timeout=SETUP_BUSY_TIMEOUT_MS / 1000)
    db.execute(f"PRAGMA busy_timeout={SETUP_BUSY_TIMEOUT_MS}")
    _switch_to_wal(db)
    db.execute("PRAGMA synchronous=NORMAL")
    # The schema is made in one transaction: its last index present means all of it is.
    made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'verdicts_expires'").fetchone()
    if made is None:  # else no write lock taken at a worker's start
        with write(db):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
    db.execute(f"PRAGMA busy_timeout={busy_ms}")
    return db


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """WAL mode, once per file.  Switching waits for no busy handler: two processes opening a
    new file at once, one gets "database is locked" (CI); it retries until the other's switch
    is done, which is its own switch too."""
    deadline = time.monotonic() + SETUP_BUSY_TIMEOUT_MS / 1000
    while db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken before the first read (see the module docstring)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def release_all_workers(db_path: Path, slots: tuple[int, int] | None = None) -> None:
    """Every session slot, whoever held it: the supervisor calls it before it starts any
    worker.  A host brought back with fewer workers (``--workers``, another CPU affinity)
    after its processes were killed together would otherwise keep the slots of worker ids
    that no longer start, and with them part of ``max_sessions``, for ever.  It also makes the
    host file (WAL mode, schema) before any worker opens it: two workers switching a new file
    to WAL at once, one fails with "database is locked" and exits.  ``slots``: the session
    table's ``host_slots.geometry``, to make it here too (empty), before any worker starts.
    Raises OSError."""
    try:
        connect(db_path).close()
    except sqlite3.Error as exc:
        raise OSError(f"{db_path}: {exc}") from None
    host_slots.reset(db_path, slots)


def release_worker(db_path: Path, worker_id: int, slots: tuple[int, int] | None = None,
                   ) -> None:
    """Give back every session slot ``worker_id`` held (the supervisor calls it when the
    worker died: its sessions died with it).  ``slots``: the table's ``host_slots.geometry``,
    to make it again if the worker died making it (or it is damaged), so the replacement and
    its siblings find a valid one.  Raises OSError or SlotTableError."""
    host_slots.clear_worker(db_path, worker_id, slots)
