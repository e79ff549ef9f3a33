"""The session slot table in memory: caps, probing, deletion, a dead worker's column, repair,
and a model check against a plain dict under hypothesis."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popproxy.proxy.slot_table import (
    HEADER_BYTES,
    KEY_BYTES,
    MAGIC,
    MAX_LOAD,
    MIN_CAPACITY,
    RELOAD_HEADROOM,
    SALT_BYTES,
    SlotTable,
    SlotTableError,
    capacity_for,
    foreign,
    format_table,
    size_for,
)

SALT = bytes(range(SALT_BYTES))


def _table(columns: int = 2, capacity: int = MIN_CAPACITY) -> SlotTable:
    buf = bytearray(size_for(columns, capacity))
    format_table(buf, columns, capacity, SALT)
    return SlotTable(buf)


def _key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=KEY_BYTES).digest()


def _colliding(table: SlotTable, home: int, count: int) -> list[bytes]:
    """``count`` keys whose home entry is ``home``: one probe chain."""
    found: list[bytes] = []
    n = 0
    while len(found) < count:
        key = _key(f"k{n}")
        n += 1
        if int.from_bytes(key[:8], "little") & (table.capacity - 1) == home:
            found.append(key)
    return found


def test_capacity_leaves_room_for_a_reload_at_most_half_full() -> None:
    assert capacity_for(1) == MIN_CAPACITY
    assert capacity_for(1000) == 4096  # 1000 * 2 / 0.5 = 4000, the next power of two
    for max_sessions in (1, 7, 1000, 50_000):
        table = _table(1, capacity_for(max_sessions))
        assert table.max_sources >= max_sessions * RELOAD_HEADROOM
        assert table.max_sources == table.capacity * MAX_LOAD


def test_geometry_and_layout_are_checked() -> None:
    with pytest.raises(ValueError):
        format_table(bytearray(size_for(1, 48)), 1, 48, SALT)  # not a power of two
    with pytest.raises(ValueError):
        format_table(bytearray(10), 1, 64, SALT)
    with pytest.raises(SlotTableError):
        SlotTable(bytearray(size_for(1, 64)))  # never formatted: no magic
    buf = bytearray(size_for(2, 64))
    format_table(buf, 2, 64, SALT)
    with pytest.raises(SlotTableError):
        SlotTable(buf + b"\0")
    table = SlotTable(buf)
    assert (table.columns, table.capacity, table.salt) == (2, 64, SALT)
    assert table.intact()
    buf[:HEADER_BYTES] = bytes(HEADER_BYTES)
    assert not table.intact()


class _KilledAtItsNextWrite(bytearray):
    """A buffer whose formatter dies at its first item write (struct's pack_into writes
    through the buffer protocol, not here)."""

    def __setitem__(self, index: object, value: object) -> None:
        raise SystemExit("killed")


def test_the_magic_is_written_last_so_a_killed_formatter_leaves_none() -> None:
    buf = _KilledAtItsNextWrite(size_for(2, 64))
    with pytest.raises(SystemExit):
        format_table(buf, 2, 64, SALT)
    assert bytes(buf[:len(MAGIC)]) == bytes(len(MAGIC))  # the rest of the header is there
    assert bytes(buf[len(MAGIC):HEADER_BYTES]) != bytes(HEADER_BYTES - len(MAGIC))
    with pytest.raises(SlotTableError):
        SlotTable(buf)  # no table: the next opener makes it again (host_slots)


def test_a_table_made_again_with_another_salt_is_not_intact_for_old_readers() -> None:
    """A worker that mapped the table before another made it again must not count in it."""
    buf = bytearray(size_for(2, 64))
    format_table(buf, 2, 64, SALT)
    old = SlotTable(buf)
    buf[:] = bytes(len(buf))
    format_table(buf, 2, 64, bytes(reversed(SALT)))
    assert not old.intact() and SlotTable(buf).intact()


def test_another_versions_table_is_told_from_a_damaged_one() -> None:
    buf = bytearray(size_for(1, 64))
    assert not foreign(buf)  # zero: half made
    buf[:len(MAGIC)] = MAGIC[:-1] + b"9"
    assert foreign(buf)
    buf[:len(MAGIC)] = b"garbage!"
    assert not foreign(buf)
    format_table(buf, 1, 64, SALT)
    assert not foreign(buf)


def test_caps_hold_across_columns() -> None:
    table = _table(columns=2)
    a, b, c = _key("10.0.0.1"), _key("10.0.0.2"), _key("10.0.0.3")
    assert table.acquire(a, 0, 3, 2)
    assert table.acquire(a, 1, 3, 2)
    assert not table.acquire(a, 0, 3, 2)  # the source has its two, over both workers
    assert table.acquire(b, 1, 3, 2)
    assert not table.acquire(c, 0, 3, 2)  # the host holds three
    assert (table.held(), table.held_by(0), table.held_by(1)) == (3, 1, 2)
    assert table.release(a, 0)
    assert table.acquire(c, 0, 3, 2)
    assert (table.count(a), table.count(b), table.count(c), table.sources) == (1, 1, 1, 3)


def test_a_release_never_frees_a_slot_the_column_did_not_hold() -> None:
    table = _table()
    key = _key("10.0.0.1")
    assert table.acquire(key, 1, 5, 5)
    assert not table.release(key, 0)  # worker 0 never held it
    assert table.release(key, 1)
    assert not table.release(key, 1)  # a second release (a bug)
    assert (table.held(), table.sources, table.count(key)) == (0, 0, 0)


def test_deleting_from_the_middle_of_a_chain_keeps_every_key_reachable() -> None:
    table = _table(columns=1)
    home = table.capacity - 2  # the chain wraps round the end of the table
    chain = _colliding(table, home, 5)
    for key in chain:
        assert table.acquire(key, 0, 100, 1)
    assert table.release(chain[1], 0)
    for key in chain[2:]:
        assert table.count(key) == 1
    assert table.count(chain[1]) == 0 and table.sources == 4
    for key in chain[2:] + chain[:1]:
        assert table.release(key, 0)
    assert table.held() == 0 and table.sources == 0


def test_a_full_table_refuses_new_sources_not_known_ones() -> None:
    table = _table(columns=1)
    keys = [_key(f"s{n}") for n in range(table.max_sources)]
    for key in keys:
        assert table.acquire(key, 0, 10_000, 2)
    assert not table.acquire(_key("one more"), 0, 10_000, 2)
    assert table.acquire(keys[0], 0, 10_000, 2)  # a second session of a known source
    assert table.release(keys[5], 0)
    assert table.acquire(_key("one more"), 0, 10_000, 2)


def test_many_sources_come_and_go() -> None:
    table = _table(columns=2, capacity=capacity_for(500))
    keys = [_key(f"10.1.{n // 256}.{n % 256}") for n in range(500)]
    for n, key in enumerate(keys):
        assert table.acquire(key, n % 2, 500, 1)
    assert table.held() == 500 and table.sources == 500
    for key in keys[::2]:
        assert table.release(key, 0)
    assert table.held() == 250
    assert all(table.count(key) == (n % 2) for n, key in enumerate(keys))


def test_clearing_a_dead_workers_column_gives_back_what_it_held_only() -> None:
    table = _table(columns=3)
    shared, mine, theirs = _key("shared"), _key("mine"), _key("theirs")
    assert table.acquire(shared, 1, 10, 5) and table.acquire(shared, 2, 10, 5)
    assert table.acquire(mine, 1, 10, 5) and table.acquire(mine, 1, 10, 5)
    assert table.acquire(theirs, 2, 10, 5)
    table.clear_column(1)  # worker 1 died
    assert (table.held(), table.held_by(1), table.sources) == (2, 0, 2)
    assert (table.count(shared), table.count(mine), table.count(theirs)) == (1, 0, 1)
    assert table.release(shared, 2) and table.release(theirs, 2)
    assert table.sources == 0


def test_clearing_a_column_that_holds_nothing_leaves_the_table_alone() -> None:
    """Every worker clears its column at start: with nothing held there it must not walk
    (and rewrite) the whole table under the lock every other worker waits for (review)."""
    table = _table()
    assert table.acquire(_key("a"), 0, 10, 10)
    # An entry with no counts, as a worker killed inside an acquire could leave: only a walk
    # over the table (rebuild) removes it, so it shows whether one happened.
    index, _ = table._probe(_key("ghost"))
    offset = table._offset(index)
    table._buf[offset:offset + KEY_BYTES] = _key("ghost")
    before = bytes(table._buf)
    table.clear_column(1)
    assert bytes(table._buf) == before
    table.clear_column(0)  # a column that held something: walked, the ghost goes too
    assert table.count(_key("a")) == 0 and table._find(_key("ghost")) is None


def test_rebuild_repairs_what_a_worker_killed_mid_shift_leaves() -> None:
    """Killed after copying an entry back in a backward shift, before clearing its old place:
    the key is there twice; lookups use the copy nearer its home, and so does the repair."""
    table = _table(columns=1)
    first, second = _colliding(table, 3, 2)
    assert table.acquire(first, 0, 10, 5) and table.acquire(second, 0, 10, 5)
    assert table.acquire(second, 0, 10, 5)
    entry = KEY_BYTES + 4
    at = HEADER_BYTES + 4 + 3 * entry
    buf = table._buf
    buf[at:at + entry] = buf[at + entry:at + 2 * entry]  # the shift's copy, then "killed"
    assert table.release(second, 0)  # lookups find the nearer copy: it holds 1 now
    table.rebuild()
    assert table.count(second) == 1 and table.count(first) == 0 and table.sources == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["take", "give", "die"]), st.integers(0, 2),
                          st.integers(0, 40)), max_size=300))
def test_the_table_behaves_like_a_dict_of_counters(ops: list[tuple[str, int, int]]) -> None:
    max_total, max_per = 30, 3
    table = _table(columns=3, capacity=capacity_for(max_total))
    model: Counter[tuple[int, int]] = Counter()  # (column, source) -> sessions
    for op, column, source in ops:
        key = _key(str(source))
        if op == "take":
            fits = (sum(model.values()) < max_total
                    and sum(model[c, source] for c in range(3)) < max_per)
            assert table.acquire(key, column, max_total, max_per) == fits
            model[column, source] += fits
        elif op == "give":
            assert table.release(key, column) == (model[column, source] > 0)
            if model[column, source]:
                model[column, source] -= 1
        else:
            table.clear_column(column)
            for item in [k for k in model if k[0] == column]:
                del model[item]
        assert table.held() == sum(model.values())
    for source in range(41):
        assert table.count(_key(str(source))) == sum(model[c, source] for c in range(3))
    assert table.sources == len({s for (_, s), n in model.items() if n})
