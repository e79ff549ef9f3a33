"""``max_sessions`` and ``max_sessions_per_ip`` for the whole host: a table in shared memory.

Every worker maps one file next to the host's SQLite file (``state_dir/session-slots``) and
counts its sessions in it (layout and probing: :mod:`popproxy.proxy.slot_table`).  Each call
takes an ``flock`` on the file for a few microseconds of struct reads and writes, on the event
loop: no thread, no database write, no fsync.  The kernel releases a dead worker's lock, and
the supervisor then clears the dead worker's column (``release_worker``), which gives back
exactly the sessions it held.

Why a file in ``state_dir`` and not a ``memfd`` the supervisor passes down: the workers already
find everything they share through ``state_dir``, so the supervisor's command line and its
inherited descriptors stay as they are, and test harnesses that run workers as separate
``popproxy run`` processes share the table as the supervisor's workers do.  The file holds no
address (keys are keyed hashes) and is never fsynced: the supervisor deletes it before it
starts any worker (``reset``), so nothing in it outlives the processes that counted it, and
makes it again, empty, at once.

Sizing: the table is made for ``max_sessions`` (with ``slot_table.RELOAD_HEADROOM``) and one
column per worker (``geometry``), by the supervisor, or by the first worker to open the file
when it runs without one (test harnesses, ``popproxy run`` processes side by side).  Whoever
opens a file that holds no valid table (empty, cut short, or without the magic, which is
written last: its maker was killed half-way) makes it again under the lock; so does the
supervisor's ``clear_worker`` when it restarts a worker.  A worker that had mapped it sees the
header change (a new salt) and opens the file again.  Sessions counted in a damaged table are
forgotten (it cannot be trusted); a table of another version is refused, never formatted over.
A slot is given back in the table it was taken in, and only there: ``acquire`` returns that
table's generation (its salt), and a give-back with another one does nothing (hashed with the
new salt, it would free the slot of a new session from the same source).

The table cannot grow while mapped, so a reload that raises ``max_sessions`` beyond what it
holds is refused in every worker alike (``refusal``): restarting popproxy makes a bigger one.
A mapped page past the end of a file raises SIGBUS, so the file is resized only when it holds
no valid table, under the lock, and every process reads the header (in the first page, always
in the file) under that lock before anything else; only popproxy writes ``state_dir`` (0700).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from popproxy.proxy.slot_table import (
    EMPTY,
    KEY_BYTES,
    MAX_LOAD,
    SALT_BYTES,
    SlotTable,
    SlotTableError,
    capacity_for,
    foreign,
    format_table,
    size_for,
)

log = logging.getLogger("popproxy.host")

SLOTS_FILE = "session-slots"  # in state_dir, next to host_state.DB_FILE


class Share(Protocol):
    """What the table needs of ``host_state.HostShare`` (not imported: host_state calls this
    module for the supervisor's ``release_worker``)."""

    @property
    def db_path(self) -> Path: ...

    @property
    def worker_id(self) -> int: ...

    @property
    def workers(self) -> int: ...


class SlotsUnavailable(OSError):
    """The table cannot be used (file error, another layout, a worker id beyond its columns):
    the server then caps this worker alone, as it did when SQLite failed."""


def slots_path(db_path: Path) -> Path:
    """The table's file for the host whose SQLite file is ``db_path``."""
    return db_path.with_name(SLOTS_FILE)


def key_of(salt: bytes, source: str) -> bytes:
    """The table's key for a source network: a keyed hash, never the address."""
    key = hashlib.blake2b(source.encode(), key=salt, digest_size=KEY_BYTES).digest()
    return key if key != EMPTY else b"\x01" + key[1:]  # all zero means "unused" in the table


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    # flock, not fcntl's record locks: a lock per open file, so two tables opened by one
    # process (tests run two servers in one) exclude each other too.
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


class _Mapping:
    """One open, mapped table file."""

    def __init__(self, path: Path, create: tuple[int, int] | None) -> None:
        """``create``: (columns, capacity) for a file that does not exist, is empty, or holds
        no valid table (its maker was killed between sizing and formatting it, or it was
        damaged): made (again) under the lock; None to open only an existing, valid one
        (FileNotFoundError if there is none, SlotTableError if it is damaged)."""
        flags = os.O_RDWR | (os.O_CREAT if create is not None else 0)
        if create is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(path, flags, 0o600)
        try:
            with _locked(self.fd):
                found, damage = self._existing()
                self.map = found or self._made(path, create, damage)
                self.table = SlotTable(self.map)
        except BaseException:
            os.close(self.fd)
            raise

    def _existing(self) -> tuple[mmap.mmap | None, str]:
        """(the file mapped, "") if it holds a table; else (None, what is wrong: "" if it is
        empty, just made or its maker died before sizing it)."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return None, ""
        buf = mmap.mmap(self.fd, size)
        try:
            SlotTable(buf)
        except SlotTableError as exc:
            other_version = foreign(buf)
            buf.close()
            if other_version:  # another popproxy may count in it: never formatted over
                raise
            return None, str(exc)
        return buf, ""

    def _made(self, path: Path, create: tuple[int, int] | None, damage: str) -> mmap.mmap:
        """A new table in the file, which holds none.  The caller holds the lock, and every
        call checks the header under it before it reads a count, so nobody counts in the old
        content meanwhile (a process that mapped it sees the new salt: ``_lock``)."""
        if create is None:
            if damage:
                raise SlotTableError(f"{path}: {damage}")
            raise FileNotFoundError(f"{path}: empty")
        if damage:
            log.warning("host session slots %s: no valid table (%s; its maker killed while "
                        "making it?): made again", path, damage)
        size = size_for(*create)
        os.ftruncate(self.fd, 0)  # all zero again, and sparse: no stale entry, no page kept
        os.ftruncate(self.fd, size)
        buf = mmap.mmap(self.fd, size)
        format_table(buf, *create, secrets.token_bytes(SALT_BYTES))
        return buf

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def geometry(workers: int, max_sessions: int, worker_id: int = 0) -> tuple[int, int]:
    """(columns, capacity) of a table for ``workers`` and ``max_sessions``: one column per
    worker (a worker id past ``workers``, as test harnesses number their processes freely,
    gets its column too)."""
    return max(workers, worker_id + 1), capacity_for(max_sessions)


def reset(db_path: Path, make: tuple[int, int] | None = None) -> None:
    """Delete the table: the supervisor calls it before it starts any worker, so no slot held
    by processes of an earlier start (killed together, maybe more of them) is counted.  A
    process that still maps the old file keeps its own copy and counts in it alone.
    ``make``: the ``geometry`` of a new, empty table made at once, so no worker starting
    has to (and none can be killed half-way through making it)."""
    slots_path(db_path).unlink(missing_ok=True)
    if make is not None:
        _Mapping(slots_path(db_path), make).close()


def clear_worker(db_path: Path, worker_id: int, make: tuple[int, int] | None = None) -> None:
    """Give back every slot ``worker_id`` held (the supervisor, when that worker died).
    ``make``: the ``geometry`` to make the table with if there is none or it is damaged
    (otherwise nothing is made: a damaged one raises SlotTableError)."""
    try:
        mapping = _Mapping(slots_path(db_path), make)
    except FileNotFoundError:  # no worker made it yet: nothing held
        return
    try:
        with _locked(mapping.fd):
            if worker_id < mapping.table.columns:
                mapping.table.clear_column(worker_id)
    finally:
        mapping.close()


def held_on_host(db_path: Path) -> int:
    """Sessions counted in the host's table (tests, diagnostics)."""
    try:
        mapping = _Mapping(slots_path(db_path), None)
    except FileNotFoundError:
        return 0
    try:
        with _locked(mapping.fd):
            return mapping.table.held()
    finally:
        mapping.close()


class SessionSlots:
    """This worker's view of the host's table: the interface the server uses (``take``,
    ``give_back``), each call a few microseconds under the file's lock, on the loop."""

    def __init__(self, share: Share, max_sessions: int) -> None:
        self._path = slots_path(share.db_path)
        self._column = share.worker_id
        self._geometry = geometry(share.workers, max_sessions, share.worker_id)
        self._mapping: _Mapping | None = None
        self._closed = False
        try:
            self._open()
        except SlotsUnavailable as exc:  # reported again by every call until it opens
            log.warning("host session slots unavailable: %s", exc)

    def _open(self) -> _Mapping:
        if self._mapping is not None:
            return self._mapping
        if self._closed:  # a session outliving stop(): the supervisor's release_worker
            raise SlotsUnavailable("the worker is stopping")
        try:
            mapping = _Mapping(self._path, self._geometry)
        except (OSError, SlotTableError) as exc:
            raise SlotsUnavailable(f"{self._path}: {exc}") from None
        if self._column >= mapping.table.columns:
            mapping.close()
            raise SlotsUnavailable(f"{self._path}: made for {mapping.table.columns} workers, "
                                   f"not worker {self._column} (restart popproxy)")
        self._mapping = mapping
        return mapping

    def _lock(self) -> _Mapping:
        """The open table, locked (the caller unlocks: ``fcntl.flock(fd, LOCK_UN)``).  No
        context manager: this runs twice per session, and contextlib's costs more calls than
        the table's own work."""
        mapping = self._open()
        fcntl.flock(mapping.fd, fcntl.LOCK_EX)
        if mapping.table.intact():
            return mapping
        # Damaged, or made again by a worker that found it damaged: no count is read from
        # it; the file is opened again, which makes a new table if none is there yet.  The
        # sessions counted in the old one are forgotten: their give-backs carry the old
        # generation and do nothing (``release``).
        fcntl.flock(mapping.fd, fcntl.LOCK_UN)
        log.warning("host session slots %s: the table's header changed: opened again",
                    self._path)
        self._mapping = None
        mapping.close()
        mapping = self._open()
        fcntl.flock(mapping.fd, fcntl.LOCK_EX)
        if not mapping.table.intact():  # damaged again at once: give up for this call
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)
            raise SlotsUnavailable(f"{self._path}: the table's header is damaged")
        return mapping

    def acquire(self, source: str, max_sessions: int, max_per_source: int) -> bytes | None:
        """Take a slot for a session from ``source`` unless the host is at a cap: the table's
        generation to give it back with (``release``), or None; raises SlotsUnavailable."""
        table = self._open().table
        key = key_of(table.salt, source)  # hashed before the lock is taken
        mapping = self._lock()
        if mapping.table is not table:  # opened again (_lock): another salt
            key = key_of(mapping.table.salt, source)
        try:
            if mapping.table.acquire(key, self._column, max_sessions, max_per_source):
                return mapping.table.salt  # one object per table: no allocation per session
            return None
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    async def take(self, source: str, max_sessions: int, max_per_source: int) -> bytes | None:
        """``acquire``, awaitable as the SQLite version was (it never suspends)."""
        return self.acquire(source, max_sessions, max_per_source)

    def release(self, source: str, generation: bytes) -> None:
        """Give back a slot ``acquire`` took in the table of ``generation``: nothing if the
        table was made again since (that slot went with the old table)."""
        key = key_of(generation, source)  # hashed before the lock is taken
        mapping = self._lock()
        try:
            if mapping.table.salt == generation:
                mapping.table.release(key, self._column)
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    def give_back(self, source: str, generation: bytes) -> None:
        """``release`` at a session's end, which must not fail: an error is logged, and the
        supervisor clears this worker's column when it restarts it."""
        try:
            self.release(source, generation)
        except SlotsUnavailable as exc:
            log.warning("host session slot not given back: %s", exc)

    def release_all(self) -> None:
        """This worker's slots left by a previous life of it (killed before it gave them back)."""
        try:
            mapping = self._lock()
        except SlotsUnavailable as exc:
            log.warning("host session slots of a previous worker %d not cleared: %s",
                        self._column, exc)
            return
        try:
            mapping.table.clear_column(self._column)
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    def held(self) -> int:
        """Sessions counted for the whole host."""
        mapping = self._lock()
        try:
            return mapping.table.held()
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    def refusal(self, max_sessions: int) -> str:
        """Why a reload to ``max_sessions`` must be refused ("" if it fits the table)."""
        # A worker whose table never opened judges by the size it asked for, as its siblings
        # judge by the table: all refuse alike, none runs a policy the others refused.
        most = (self._mapping.table.max_sources if self._mapping is not None
                else int(self._geometry[1] * MAX_LOAD))
        if max_sessions <= most:
            return ""
        return (f"limits.max_sessions {max_sessions} is over the {most}"
                " the host's session table was sized for at start (restart popproxy)")

    def close(self) -> None:
        self._closed = True
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None
