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
starts any worker (``reset``), so nothing in it outlives the processes that counted it.

Sizing: the first worker to open the file makes it for its ``max_sessions`` (with
``slot_table.RELOAD_HEADROOM``) and one column per worker.  The table cannot grow while mapped,
so a reload that raises ``max_sessions`` beyond what it holds is refused in every worker alike
(``refusal``): restarting popproxy makes a bigger one.  The file must not be truncated while the
workers run (a mapped page past the end of a file raises SIGBUS): only popproxy writes
``state_dir`` (0700).
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
        """``create``: (columns, capacity) for a file that does not exist or is empty; None
        to open only an existing one (FileNotFoundError otherwise)."""
        flags = os.O_RDWR | (os.O_CREAT if create is not None else 0)
        if create is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(path, flags, 0o600)
        try:
            with _locked(self.fd):
                size = os.fstat(self.fd).st_size
                if size == 0 and create is None:  # its maker died before sizing it
                    raise FileNotFoundError(f"{path}: empty")
                if size == 0 and create is not None:
                    size = size_for(*create)
                    os.ftruncate(self.fd, size)  # sparse: zero, and no page written yet
                    self.map = mmap.mmap(self.fd, size)
                    format_table(self.map, *create, secrets.token_bytes(SALT_BYTES))
                else:
                    self.map = mmap.mmap(self.fd, size)
                self.table = SlotTable(self.map)
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


def reset(db_path: Path) -> None:
    """Delete the table: the supervisor calls it before it starts any worker, so no slot held
    by processes of an earlier start (killed together, maybe more of them) is counted.  A
    process that still maps the old file keeps its own copy and counts in it alone."""
    slots_path(db_path).unlink(missing_ok=True)


def clear_worker(db_path: Path, worker_id: int) -> None:
    """Give back every slot ``worker_id`` held (the supervisor, when that worker died)."""
    try:
        mapping = _Mapping(slots_path(db_path), None)
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
        # One column per worker; a worker id past ``workers`` (test harnesses number their
        # processes freely) gets its column too.
        self._geometry = (max(share.workers, share.worker_id + 1), capacity_for(max_sessions))
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
        if not mapping.table.intact():  # overwritten under us: use no count from it
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)
            raise SlotsUnavailable(f"{self._path}: the table's header is damaged")
        return mapping

    def acquire(self, source: str, max_sessions: int, max_per_source: int) -> bool:
        """Take a slot for a session from ``source`` unless the host is at a cap; raises
        SlotsUnavailable."""
        key = key_of(self._open().table.salt, source)  # hashed before the lock is taken
        mapping = self._lock()
        try:
            return mapping.table.acquire(key, self._column, max_sessions, max_per_source)
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    async def take(self, source: str, max_sessions: int, max_per_source: int) -> bool:
        """``acquire``, awaitable as the SQLite version was (it never suspends)."""
        return self.acquire(source, max_sessions, max_per_source)

    def release(self, source: str) -> None:
        key = key_of(self._open().table.salt, source)
        mapping = self._lock()
        try:
            mapping.table.release(key, self._column)
        finally:
            fcntl.flock(mapping.fd, fcntl.LOCK_UN)

    def give_back(self, source: str) -> None:
        """``release`` at a session's end, which must not fail: an error is logged, and the
        supervisor clears this worker's column when it restarts it."""
        try:
            self.release(source)
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
