"""The host's session table as the workers use it: one file in state_dir, mapped by each,
locked per call; what the supervisor does at start and when a worker dies; processes racing
for the last slot."""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from popproxy.proxy.host_slots import (
    SLOTS_FILE,
    SessionSlots,
    SlotsUnavailable,
    clear_worker,
    geometry,
    held_on_host,
    reset,
    slots_path,
)
from popproxy.proxy.host_state import DB_FILE, HostShare
from popproxy.proxy.slot_table import (
    HEADER_BYTES,
    MAGIC,
    SALT_BYTES,
    SlotTable,
    SlotTableError,
    capacity_for,
    format_table,
)

MAX_SESSIONS, MAX_PER_SOURCE = 3, 2
RACERS, ROUNDS = 4, 30


def _slots(db: Path, worker: int, workers: int = 4, max_sessions: int = MAX_SESSIONS,
           ) -> SessionSlots:
    return SessionSlots(HostShare(db, worker, workers), max_sessions)


def test_the_file_is_private_sparse_and_holds_no_address(tmp_path: Path) -> None:
    db = tmp_path / "state" / DB_FILE
    slots = _slots(db, 1)
    assert slots.acquire("192.0.2.77", MAX_SESSIONS, MAX_PER_SOURCE)
    path = slots_path(db)
    assert path.name == SLOTS_FILE and path.parent == db.parent
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert b"192.0.2.77" not in data and "192.0.2.77".encode("utf-16-le") not in data
    assert held_on_host(db) == 1
    slots.close()


def test_caps_hold_across_workers(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    one, two = _slots(db, 1), _slots(db, 2)
    taken = one.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert taken is not None
    assert two.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert one.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE) is None  # two, over both
    assert two.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not one.acquire("10.0.0.3", MAX_SESSIONS, MAX_PER_SOURCE)  # the host is full
    assert one.held() == two.held() == MAX_SESSIONS
    one.give_back("10.0.0.1", taken)
    assert two.acquire("10.0.0.3", MAX_SESSIONS, MAX_PER_SOURCE)
    assert one.held() == MAX_SESSIONS


def test_a_dead_workers_slots_come_back_and_no_one_elses(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    dead, alive = _slots(db, 1), _slots(db, 2)
    assert dead.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert dead.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    assert alive.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not alive.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
    clear_worker(db, 1)  # the supervisor saw worker 1 die
    assert alive.held() == 1
    assert alive.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
    clear_worker(db, 17)  # an id the table has no column for: nothing to give back
    clear_worker(tmp_path / "elsewhere" / DB_FILE, 1)  # no table made yet: nothing held
    (tmp_path / "empty").mkdir()
    slots_path(tmp_path / "empty" / DB_FILE).touch()  # its maker died before sizing it
    clear_worker(tmp_path / "empty" / DB_FILE, 1)
    assert held_on_host(tmp_path / "empty" / DB_FILE) == 0
    assert alive.held() == 2


def test_a_restarted_worker_gives_back_what_its_previous_life_held(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    assert _slots(db, 1).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)  # then killed
    reborn = _slots(db, 1)
    reborn.release_all()
    assert reborn.held() == 0


def test_reset_before_the_workers_start_forgets_every_slot(tmp_path: Path) -> None:
    """Killed with its workers, the host comes back with fewer: worker 3's slots must not keep
    part of max_sessions for ever.  A process still mapping the old file counts alone."""
    db = tmp_path / DB_FILE
    gone = _slots(db, 3)
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert gone.acquire(source, MAX_SESSIONS, MAX_PER_SOURCE)
    reset(db)
    reset(db)  # no file: nothing to do
    fresh = _slots(db, 0, workers=1)
    assert fresh.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
    assert gone.held() == MAX_SESSIONS and fresh.held() == 1 == held_on_host(db)


def test_a_worker_beyond_the_tables_columns_is_told_so(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    taken = _slots(db, 0, workers=2).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert taken is not None
    late = _slots(db, 5, workers=2)  # the table was made with two columns
    with pytest.raises(SlotsUnavailable, match="made for 2 workers, not worker 5"):
        late.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    late.give_back("10.0.0.1", taken)  # logged, never raised at a session's end
    late.release_all()


def test_a_damaged_header_is_never_counted_in_but_made_again(tmp_path: Path) -> None:
    """A header overwritten under the workers: no count is read from the old table; the next
    opener makes a new one under the lock, and every worker counts in that one."""
    db = tmp_path / DB_FILE
    slots = _slots(db, 0)
    assert slots.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    with slots_path(db).open("r+b") as file:
        file.write(b"garbage!")
    other = _slots(db, 1)  # opens the damaged file: makes it again
    assert slots.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)  # sees the new salt
    assert other.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not other.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)  # per source, host-wide
    assert slots.held() == other.held() == 2 == held_on_host(db)  # the old count is gone


def _taken(slots: SessionSlots, source: str) -> bytes:
    generation = slots.acquire(source, 100, 2)
    assert generation is not None
    return generation


def test_a_session_of_a_table_made_again_gives_back_nothing_in_the_new_one(
        tmp_path: Path) -> None:
    """Regression (review): after a repair, an old session's give-back was hashed with the new
    salt and freed the slot of a new session from the same source: the host then counted
    fewer sessions than it held, for as long as the new ones lived."""
    db = tmp_path / DB_FILE
    worker = _slots(db, 0, max_sessions=100)
    old = [_taken(worker, "10.0.0.1") for _ in range(2)]
    with slots_path(db).open("r+b") as file:
        file.write(b"garbage!")
    _slots(db, 1, max_sessions=100).close()  # opens the damaged file: makes it again, empty
    new = [_taken(worker, "10.0.0.1") for _ in range(2)]
    assert old[0] == old[1] != new[0] == new[1]  # a new generation
    assert worker.acquire("10.0.0.1", 100, 2) is None  # the source's two, host-wide
    for generation in old:  # the old sessions end
        worker.give_back("10.0.0.1", generation)
    assert held_on_host(db) == 2 and worker.acquire("10.0.0.1", 100, 2) is None
    for generation in new:
        worker.give_back("10.0.0.1", generation)
    assert held_on_host(db) == 0


def test_a_table_of_another_version_is_refused_not_formatted_over(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    _slots(db, 0).close()
    with slots_path(db).open("r+b") as file:
        file.write(b"POPSLOT9")  # a later popproxy's layout: it may be counting in it
    with pytest.raises(SlotsUnavailable, match="not a session slot table"):
        _slots(db, 1).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert slots_path(db).read_bytes()[:8] == b"POPSLOT9"


# A worker killed while it made the table (first open after the supervisor deleted it): the
# file sized (ftruncate) but not formatted, cut short, or formatted up to the magic, which is
# written last.  Regression (review): every worker then capped alone until a restart.
def _killed_while_sizing(path: Path, size: int) -> None:
    with path.open("r+b") as file:
        file.truncate(size)


def _killed_inside_format(path: Path, size: int) -> None:
    """Killed just before the magic: every other field of the header written (review: this
    case wrote zeros over a file already all zero, the same as sized-not-formatted)."""
    made = bytearray(size)
    format_table(made, *geometry(4, MAX_SESSIONS), secrets.token_bytes(SALT_BYTES))
    SlotTable(made)  # with its magic, a valid table
    made[:len(MAGIC)] = bytes(len(MAGIC))
    assert any(made[:HEADER_BYTES])
    with path.open("r+b") as file:
        file.write(made[:HEADER_BYTES])


HALF_MADE = {
    "sized-not-formatted": _killed_while_sizing,
    "cut-short": lambda path, size: _killed_while_sizing(path, 10),
    "no-magic": _killed_inside_format,
}


@pytest.mark.parametrize("damage", HALF_MADE.values(), ids=HALF_MADE.keys())
def test_a_half_made_table_is_made_again_by_the_next_worker(
        tmp_path: Path, damage: Callable[[Path, int], None]) -> None:
    db = tmp_path / DB_FILE
    path = slots_path(db)
    _slots(db, 0).close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.write(bytes(size))  # zero: as ftruncate left it
    damage(path, size)
    one, two = _slots(db, 0), _slots(db, 1)
    assert one.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert two.acquire("10.0.0.2", MAX_SESSIONS, MAX_PER_SOURCE)
    assert one.acquire("10.0.0.3", MAX_SESSIONS, MAX_PER_SOURCE)
    assert not two.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)  # host-wide again
    assert held_on_host(db) == MAX_SESSIONS
    assert path.stat().st_size == size


KILLED_MAKER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from popproxy.proxy import host_slots
    from popproxy.proxy.host_state import HostShare
    def killed(*args: object) -> None:  # between ftruncate and the header
        os.kill(os.getpid(), signal.SIGKILL)
    host_slots.format_table = killed
    host_slots.SessionSlots(HostShare(Path(sys.argv[1]), 0, 4), int(sys.argv[2]))
""")


def test_a_worker_killed_making_the_table_leaves_one_the_others_repair(tmp_path: Path) -> None:
    """The real thing: a process SIGKILLed between sizing the new file and writing its header;
    the supervisor's restart path (``clear_worker`` with the geometry) repairs it, and so does
    any worker that opens it first."""
    for repairer in ("worker", "supervisor"):
        db = tmp_path / repairer / DB_FILE
        db.parent.mkdir()
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run([sys.executable, "-c", KILLED_MAKER, str(db), str(MAX_SESSIONS)],
                              env=env, timeout=60, check=False)
        assert done.returncode == -signal.SIGKILL
        assert slots_path(db).stat().st_size > 0 and not any(slots_path(db).read_bytes())
        if repairer == "supervisor":
            clear_worker(db, 0, geometry(4, MAX_SESSIONS))
            assert held_on_host(db) == 0  # a valid, empty table: opened without making one
        one, two = _slots(db, 0), _slots(db, 1)
        for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            assert (one if source != "10.0.0.2" else two).acquire(source, MAX_SESSIONS,
                                                                  MAX_PER_SOURCE)
        assert not two.acquire("10.0.0.4", MAX_SESSIONS, MAX_PER_SOURCE)
        assert held_on_host(db) == MAX_SESSIONS


def test_the_supervisor_makes_the_table_before_any_worker(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    assert _slots(db, 0).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    reset(db, geometry(4, MAX_SESSIONS))
    assert held_on_host(db) == 0  # there, empty, and valid without any worker making it
    assert _slots(db, 3).acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    with slots_path(db).open("r+b") as file:
        file.write(bytes(8))
    with pytest.raises(SlotTableError):  # without the geometry it only reports the damage
        clear_worker(db, 3)


def test_a_reload_past_the_tables_size_is_refused(tmp_path: Path) -> None:
    slots = _slots(tmp_path / DB_FILE, 0, max_sessions=1000)
    fits = capacity_for(1000) // 2
    assert slots.refusal(1000) == slots.refusal(fits) == ""
    assert "restart popproxy" in slots.refusal(fits + 1)


def test_a_worker_whose_table_never_opened_refuses_the_same_reloads(tmp_path: Path) -> None:
    """Review: it answered "" to every reload and ran a policy its siblings refused."""
    db = tmp_path / DB_FILE
    _slots(db, 0, max_sessions=1000).close()
    with slots_path(db).open("r+b") as file:
        file.write(b"POPSLOT9")  # another version's table: refused, not made again
    unopened = _slots(db, 1, max_sessions=1000)
    fits = capacity_for(1000) // 2
    assert unopened.refusal(fits) == ""
    assert "restart popproxy" in unopened.refusal(fits + 1)


def test_after_close_a_late_give_back_is_logged_not_raised(tmp_path: Path) -> None:
    slots = _slots(tmp_path / DB_FILE, 0)
    taken = slots.acquire("10.0.0.1", MAX_SESSIONS, MAX_PER_SOURCE)
    assert taken is not None
    slots.close()
    slots.give_back("10.0.0.1", taken)  # a session outliving stop()
    with pytest.raises(SlotsUnavailable, match="stopping"):
        slots.held()


def _racer(db: str, worker: int, start: multiprocessing.synchronize.Barrier,
           results: multiprocessing.Queue[tuple[int, int, bool]]) -> None:
    slots = _slots(Path(db), worker, workers=RACERS, max_sessions=1)
    for round_ in range(ROUNDS):
        start.wait()
        won = slots.acquire(f"10.0.{worker}.1", 1, 1)  # one slot on the host
        results.put((round_, worker, won is not None))
        start.wait()  # every racer has tried
        if won is not None:
            slots.release(f"10.0.{worker}.1", won)
        start.wait()  # the slot is free again
    slots.close()


def test_processes_racing_for_the_last_slot_get_it_once(tmp_path: Path) -> None:
    db = tmp_path / DB_FILE
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as workers are
    start = context.Barrier(RACERS)
    results: multiprocessing.Queue[tuple[int, int, bool]] = context.Queue()
    procs = [context.Process(target=_racer, args=(str(db), worker, start, results))
             for worker in range(RACERS)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in range(RACERS * ROUNDS)]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    winners = {round_: sum(won for r, _, won in outcomes if r == round_)
               for round_ in range(ROUNDS)}
    assert winners == {round_: 1 for round_ in range(ROUNDS)}
    assert held_on_host(db) == 0
