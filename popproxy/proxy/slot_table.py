"""The host's session slots as a fixed-size table in one shared buffer: layout and probing only.

With several workers on a host (issue 18), ``max_sessions`` and ``max_sessions_per_ip`` hold
for the host.  A SQLite table did that with two write transactions per session, each handed to
a thread; this table lives in a shared memory mapping (``host_slots`` maps the file and holds
the lock around every call), so taking and giving back a slot is a few struct reads and writes
on the event loop.  This module does no I/O and takes no lock: it works on any writable buffer
(a ``bytearray`` in tests, an ``mmap`` in the workers), so the whole logic is tested in memory.

Layout (little-endian, every field fixed at format time)::

    header   MAGIC, columns (u32), capacity (u32), salt (SALT_BYTES),
             sources (u32: entries in use)                                   HEADER_BYTES
    totals   columns x u32: sessions held by each worker (the host total is their sum)
    entries  capacity x (key: KEY_BYTES, columns x u32: that source's sessions per worker)

One column per worker: a worker writes only its own counts, and when it dies the supervisor
zeroes its column (``clear_column``), which gives back exactly what it held.  Keys are keyed
hashes of the source network (``host_slots`` makes them): no address is ever stored, and the
salt, chosen when the file is made, keeps anyone from choosing sources whose keys collide to
make the probe chains long (hash flooding).

Open addressing with linear probing; an entry is deleted with backward-shift deletion (Knuth,
TAOCP vol. 3, 6.4, Algorithm R) as soon as its counts are all zero, so the table never fills
with tombstones.  A source holds an entry only while it holds a session, so live entries never
exceed the host's sessions, and the capacity (``capacity_for``) keeps the load at most
``MAX_LOAD``.
"""

from __future__ import annotations

import mmap
import struct
from itertools import compress
from operator import itemgetter
from typing import TypeAlias

MAGIC = b"POPSLOT1"  # also the layout's version: a file from another version is refused
KEY_BYTES = 16  # 128 bits of keyed BLAKE2b: no accidental collision among live sources
SALT_BYTES = 16
_HEADER = struct.Struct(f"<8sII{SALT_BYTES}s")
_SOURCES_AT = _HEADER.size  # entries in use: kept, so a new source costs no scan
HEADER_BYTES = 64  # the header padded, so the totals start on a cache line of their own
EMPTY = bytes(KEY_BYTES)  # an unused entry (a key is never all zero: see ``key_of`` callers)
# Linear probing stays short while the table is at most half full (expected probes 1.5 for a
# hit, 2.5 for a miss: Knuth, TAOCP vol. 3, 6.4).
MAX_LOAD = 0.5
# The table is sized at start for this many times ``max_sessions`` at MAX_LOAD, so a policy
# reload may raise max_sessions up to that factor; beyond it the reload is refused (the table
# cannot grow while the workers map it): ``max_sources``.
RELOAD_HEADROOM = 2
MIN_CAPACITY = 64  # a table of a few cache lines: tiny policies (tests) need no special case
_U32 = struct.Struct("<I")

Buffer: TypeAlias = "bytearray | mmap.mmap"  # slices of both are bytes-like, both writable


class SlotTableError(ValueError):
    """The buffer does not hold a table of this layout (another version, or damaged)."""


def capacity_for(max_sessions: int) -> int:
    """Entries for ``max_sessions`` (with RELOAD_HEADROOM) at MAX_LOAD: a power of two, so the
    home index is a mask of the key."""
    needed = max(MIN_CAPACITY, int(max_sessions * RELOAD_HEADROOM / MAX_LOAD))
    return 1 << (needed - 1).bit_length()


def size_for(columns: int, capacity: int) -> int:
    """Bytes of a table with ``columns`` workers and ``capacity`` entries."""
    return HEADER_BYTES + 4 * columns + capacity * (KEY_BYTES + 4 * columns)


def format_table(buf: Buffer, columns: int, capacity: int, salt: bytes) -> None:
    """Write the header into ``buf``: exactly ``size_for`` bytes, all zero (a new file made
    with ``ftruncate``, a new ``bytearray``).  Not zeroed here: writing every page of a new
    file would make the kernel keep all of it in memory, where a sparse one costs only the
    pages that live entries touch.  MAGIC goes in last: a formatter killed before it leaves a
    file without it, which the next opener formats again (``host_slots``)."""
    if columns < 1 or capacity < 1 or capacity & (capacity - 1) or len(salt) != SALT_BYTES:
        raise ValueError(f"bad table geometry: {columns} columns, {capacity} entries")
    if len(buf) != size_for(columns, capacity):
        raise ValueError(f"buffer of {len(buf)} bytes for {size_for(columns, capacity)}")
    _HEADER.pack_into(buf, 0, bytes(len(MAGIC)), columns, capacity, salt)
    buf[:len(MAGIC)] = MAGIC


def foreign(buf: Buffer) -> bool:
    """The buffer holds a table of another version of this layout (refused, never formatted
    over: another popproxy may be using it), not a damaged or half-made one."""
    head = bytes(buf[:len(MAGIC)])
    return head[:-1] == MAGIC[:-1] and head != MAGIC


class SlotTable:
    """Session counts per (source key, worker column) over a formatted buffer.

    Every method assumes the caller holds the host's lock (``host_slots``) for its duration.
    """

    def __init__(self, buf: Buffer) -> None:
        if len(buf) < HEADER_BYTES:
            raise SlotTableError(f"{len(buf)} bytes: no header")
        magic, columns_, capacity_, salt = _HEADER.unpack_from(buf, 0)
        columns, capacity = int(columns_), int(capacity_)
        if magic != MAGIC or columns < 1 or capacity < 1 or capacity & (capacity - 1):
            raise SlotTableError("not a session slot table of this version")
        if len(buf) != size_for(columns, capacity):
            raise SlotTableError(f"{len(buf)} bytes for {size_for(columns, capacity)}")
        self._buf = buf
        self._header = bytes(buf[:_HEADER.size])  # the salt too: a table made again differs
        self.columns: int = columns
        self.capacity: int = capacity
        self.salt: bytes = bytes(salt)
        self._mask = capacity - 1
        self._counts = struct.Struct(f"<{columns}I")
        self._keys = struct.Struct(f"<{KEY_BYTES}s{4 * columns}x")  # an entry's key alone
        self._entry = KEY_BYTES + 4 * columns
        self._entries = HEADER_BYTES + 4 * columns  # offset of entry 0

    @property
    def max_sources(self) -> int:
        """Live sources the table holds at MAX_LOAD: the largest ``max_sessions`` it serves."""
        return int(self.capacity * MAX_LOAD)

    @property
    def sources(self) -> int:
        """Entries in use: sources holding at least one session."""
        return int(_U32.unpack_from(self._buf, _SOURCES_AT)[0])

    def intact(self) -> bool:
        """The header still says what it said when this object read it: not damaged, and not
        made again (another salt) by a process that found it damaged."""
        return self._buf[:_HEADER.size] == self._header

    def held(self) -> int:
        """Sessions held on the host (every worker's total)."""
        return sum(self._counts.unpack_from(self._buf, HEADER_BYTES))

    def held_by(self, column: int) -> int:
        return int(_U32.unpack_from(self._buf, HEADER_BYTES + 4 * column)[0])

    def count(self, key: bytes) -> int:
        """Sessions held on the host by the source ``key``."""
        index = self._find(key)
        return 0 if index is None else sum(self._counts_at(index))

    def acquire(self, key: bytes, column: int, max_total: int, max_per_key: int) -> bool:
        """Count a session of ``key`` in ``column`` unless the host holds ``max_total``
        sessions, ``key`` holds ``max_per_key``, or the table holds ``max_sources`` sources."""
        if self.held() >= max_total:
            return False
        index, found = self._probe(key)
        if found:
            if sum(self._counts_at(index)) >= max_per_key:
                return False
        elif self.sources >= self.max_sources or max_per_key < 1:
            return False
        else:
            self._buf[self._offset(index):self._offset(index) + KEY_BYTES] = key
            _U32.pack_into(self._buf, _SOURCES_AT, self.sources + 1)
        self._add(index, column, 1)
        return True

    def release(self, key: bytes, column: int) -> bool:
        """Give back one session of ``key`` counted in ``column``; False if it held none
        there (a second release, a bug, must never free another worker's slot)."""
        index = self._find(key)
        if index is None or self._counts_at(index)[column] == 0:
            return False
        self._add(index, column, -1)
        if not any(self._counts_at(index)):
            self._delete(index)
        return True

    def clear_column(self, column: int) -> None:
        """Forget every session counted in ``column`` (its worker died, or starts again).
        Nothing to forget, nothing done: a rebuild walks the whole table under the lock every
        worker waits for (0.3 s for 100,000 sessions), and every worker calls this at start."""
        if self.held_by(column) == 0:
            return
        _U32.pack_into(self._buf, HEADER_BYTES + 4 * column, 0)
        self.rebuild(drop_column=column)

    def rebuild(self, drop_column: int | None = None) -> None:
        """Re-insert every live entry (zeroing ``drop_column`` first).

        Also repairs what a worker killed inside a call can leave (its lock dies with it): a
        half-done backward shift leaves one entry in two places, and lookups find the copy
        nearer its home, so that one is kept; an entry whose counts are all zero goes.
        """
        live: dict[bytes, tuple[int, list[int]]] = {}
        start, size = self._entries, self.capacity * self._entry
        # The empty entries are skipped in C (iter_unpack, map, compress), not one Python
        # iteration each: a table for 100,000 sessions has half a million entries, and every
        # worker waits for the lock meanwhile.
        rows = self._keys.iter_unpack(bytes(self._buf[start:start + size]))
        keys = list(map(itemgetter(0), rows))
        for index in compress(range(self.capacity), map(EMPTY.__ne__, keys)):
            key = keys[index]
            counts = list(self._counts_at(index))
            if drop_column is not None:
                counts[drop_column] = 0
            distance = (index - self._home(key)) & self._mask
            if any(counts) and (key not in live or distance < live[key][0]):
                live[key] = (distance, counts)
        self._buf[start:start + size] = bytes(size)
        for key, (_, counts) in live.items():
            index, _ = self._probe(key)
            offset = self._offset(index)
            self._buf[offset:offset + KEY_BYTES] = key
            self._counts.pack_into(self._buf, offset + KEY_BYTES, *counts)
        _U32.pack_into(self._buf, _SOURCES_AT, len(live))

    # Probing -------------------------------------------------------------------------------

    def _offset(self, index: int) -> int:
        return self._entries + index * self._entry

    def _home(self, key: bytes) -> int:
        return int.from_bytes(key[:8], "little") & self._mask

    def _key_at(self, index: int) -> bytes:
        offset = self._offset(index)
        return bytes(self._buf[offset:offset + KEY_BYTES])

    def _counts_at(self, index: int) -> tuple[int, ...]:
        return self._counts.unpack_from(self._buf, self._offset(index) + KEY_BYTES)

    def _probe(self, key: bytes) -> tuple[int, bool]:
        """(index of ``key``, True) or (the empty entry where it would go, False)."""
        if len(key) != KEY_BYTES or key == EMPTY:
            raise ValueError("a key is KEY_BYTES long and never all zero")
        # Inlined (_home, _offset, _key_at): this loop runs at every session's start and end.
        buf, base, size, mask = self._buf, self._entries, self._entry, self._mask
        index = int.from_bytes(key[:8], "little") & mask
        for _ in range(self.capacity):
            offset = base + index * size
            stored = buf[offset:offset + KEY_BYTES]
            if stored == key:
                return index, True
            if stored == EMPTY:
                return index, False
            index = (index + 1) & mask
        raise SlotTableError("no empty entry: the table is full")  # max_sources prevents it

    def _find(self, key: bytes) -> int | None:
        index, found = self._probe(key)
        return index if found else None

    def _add(self, index: int, column: int, delta: int) -> None:
        # The total rises first and falls last, so it never says less than the column's
        # entries hold, even for a worker killed between the two writes: clear_column may then
        # trust a zero total (nothing to forget) and skip the walk over the whole table.
        at = self._offset(index) + KEY_BYTES + 4 * column
        total = HEADER_BYTES + 4 * column
        for offset in ((total, at) if delta > 0 else (at, total)):
            _U32.pack_into(self._buf, offset, _U32.unpack_from(self._buf, offset)[0] + delta)

    def _delete(self, hole: int) -> None:
        """Backward-shift deletion: move later entries of the chain into the hole, so every
        key stays reachable from its home without tombstones."""
        index = hole
        while True:
            index = (index + 1) & self._mask
            key = self._key_at(index)
            if key == EMPTY:
                break
            # The entry stays if its home lies cyclically in (hole, index].
            home = self._home(key)
            if (hole < home <= index) if hole <= index else (home > hole or home <= index):
                continue
            src, dst = self._offset(index), self._offset(hole)
            self._buf[dst:dst + self._entry] = self._buf[src:src + self._entry]
            hole = index
        offset = self._offset(hole)
        self._buf[offset:offset + self._entry] = bytes(self._entry)
        _U32.pack_into(self._buf, _SOURCES_AT, self.sources - 1)
