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
- ``session_slots``: :class:`SessionSlots`, one row per (worker, source) with its session count
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
SALT_BYTES = 16  # keys the hash of session sources (below)

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
CREATE TABLE IF NOT EXISTS session_slots (
    worker INTEGER NOT NULL, source TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (worker, source)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS session_slots_source ON session_slots (source);
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
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'session_slots'").fetchone()
    if made is None:  # else no write lock taken at a worker's start
        with write(db):
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)",
                       (secrets.token_hex(SALT_BYTES),))
    db.execute(f"PRAGMA busy_timeout={busy_ms}")
    return db


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


def release_all_workers(db_path: Path) -> None:
    """Every session slot, whoever held it: the supervisor calls it before it starts any
    worker.  A host brought back with fewer workers (``--workers``, another CPU affinity)
    after its processes were killed together would otherwise keep the rows of worker ids
    that no longer start, and with them part of ``max_sessions``, for ever."""
    db = connect(db_path)
    try:
        with write(db):
            db.execute("DELETE FROM session_slots")
    finally:
        db.close()


def release_worker(db_path: Path, worker_id: int) -> None:
    """Give back every session slot ``worker_id`` held (the supervisor calls it when the
    worker died: its sessions died with it)."""
    db = connect(db_path)
    try:
        with write(db):
            db.execute("DELETE FROM session_slots WHERE worker = ?", (worker_id,))
    finally:
        db.close()


class SessionSlots:
    """``max_sessions`` and ``max_sessions_per_ip`` counted over every worker of the host.

    Sources are stored as keyed hashes (a random salt kept in the file), not addresses.  Each
    call is one short write transaction, run by the server in this object's thread (``take``,
    ``give_back``): a write may wait for another worker's (store_sqlite explains why not on the
    loop).  ``acquire`` raises ``sqlite3.Error``, and the server then caps this worker alone.
    """

    def __init__(self, share: HostShare) -> None:
        self._db = connect(share.db_path)  # used by self._thread only, once made
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="popproxy-slots-db")
        self._worker = share.worker_id
        (salt,) = self._db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
        self._salt = bytes.fromhex(salt)

    def _hash(self, source: str) -> str:
        return hashlib.blake2b(source.encode(), key=self._salt, digest_size=16).hexdigest()

    def acquire(self, source: str, max_sessions: int, max_per_source: int) -> bool:
        """Take a slot for a session from ``source`` unless the host is at a cap."""
        hashed = self._hash(source)
        with write(self._db):
            (total,) = self._db.execute("SELECT coalesce(sum(count), 0) FROM session_slots"
                                        ).fetchone()
            (mine,) = self._db.execute(
                "SELECT coalesce(sum(count), 0) FROM session_slots WHERE source = ?",
                (hashed,)).fetchone()
            if total >= max_sessions or mine >= max_per_source:
                return False
            self._db.execute(
                "INSERT INTO session_slots VALUES (?, ?, 1) ON CONFLICT (worker, source) "
                "DO UPDATE SET count = count + 1", (self._worker, hashed))
        return True

    async def take(self, source: str, max_sessions: int, max_per_source: int) -> bool:
        """``acquire`` in this object's thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self.acquire, source, max_sessions, max_per_source)

    def give_back(self, source: str) -> None:
        """``release`` in this object's thread, not awaited: a session's end (one cancelled
        at shutdown too) never waits for the file."""
        try:
            self._thread.submit(self.release, source).add_done_callback(_report)
        except RuntimeError:  # a session outliving stop(): the supervisor's release_worker
            log.warning("host session slot not given back: the worker is stopping")

    def release(self, source: str) -> None:
        hashed = self._hash(source)
        with write(self._db):
            self._db.execute("UPDATE session_slots SET count = count - 1 "
                             "WHERE worker = ? AND source = ?", (self._worker, hashed))
            self._db.execute("DELETE FROM session_slots WHERE worker = ? AND count <= 0",
                             (self._worker,))

    def release_all(self) -> None:
        """This worker's slots left by a previous life of it (killed before it gave them back)."""
        with write(self._db):
            self._db.execute("DELETE FROM session_slots WHERE worker = ?", (self._worker,))

    def held(self) -> int:
        """Sessions counted for the whole host."""
        (total,) = self._db.execute("SELECT coalesce(sum(count), 0) FROM session_slots"
                                    ).fetchone()
        return int(total)

    def close(self) -> None:
        """After the slots still being given back (one thread: in order)."""
        self._thread.submit(self._db.close)
        self._thread.shutdown(wait=True)


def _report(done: Future[None]) -> None:
    exc = done.exception()
    if exc is not None:  # the supervisor's release_worker clears it when this worker restarts
        log.warning("host session slot not given back (%s)", exc.__class__.__name__)
