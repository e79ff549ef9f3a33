"""``ProxyServer(host=HostShare(...))`` in one process: which stores it picks, host-wide caps,
and what happens when the host's file breaks.  Two real processes: tests/integration/
test_host_share.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import DemoUpstream
from popproxy.proxy.host_slots import held_on_host, slots_path
from popproxy.proxy.host_state import DB_FILE, HostShare
from popproxy.proxy.lockout_store import FailoverStore, MemoryStore, RedisStore
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.store_sqlite import SqliteStore, SqliteVerdicts
from popproxy.proxy.verdict_cache import RedisVerdicts
from tests.helpers import LoopThread, make_config
from tests.integration.rawpop import RawPOP3, wait_for

TOO_MANY = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
WORKERS = 3  # the ids these tests use (0 to 2): each gets a column in the host's slot table


@contextmanager
def _worker(config: Policy, loop: LoopThread, db: Path, worker_id: int) -> Iterator[ProxyServer]:
    server = ProxyServer(config, host=HostShare(db, worker_id, WORKERS))
    loop.call(server.start({lst.name: 0 for lst in config.listeners}))
    try:
        yield server
    finally:
        loop.call(server.stop(grace=1))


def _port(server: ProxyServer) -> int:
    return server.ports["pop3"]


def _held(db: Path) -> int:
    return held_on_host(db)


def test_with_a_host_share_the_stores_are_the_hosts_file(loop_thread: LoopThread,
                                                         tmp_path: Path) -> None:
    config = make_config(1, lockout={"enabled": True}, scan={"enabled": True},
                         state_dir=str(tmp_path))
    with _worker(config, loop_thread, tmp_path / DB_FILE, 1) as server:
        assert server.lockout is not None and server.scan is not None
        store = server.lockout._store
        assert isinstance(store, FailoverStore) and isinstance(store._primary, SqliteStore)
        assert isinstance(server.scan.cache._shared, SqliteVerdicts)
        assert server.scan.cache._path is None  # no verdicts.jsonl written by several workers

        async def reload() -> bool:  # a reload keeps the host's stores
            changed = config.model_copy(update={"lockout": config.lockout.model_copy(
                update={"window": 60.0})})
            return server.reload_policy(changed)

        assert loop_thread.call(reload())
        new = server.lockout._store
        assert isinstance(new, FailoverStore) and isinstance(new._primary, SqliteStore)
    # Without one, as before: memory counters and the state_dir's journal.
    alone = ProxyServer(config)
    assert alone.lockout is not None and isinstance(alone.lockout._store, MemoryStore)
    assert alone.scan is not None and alone.scan.cache._path is not None
    loop_thread.call(alone.stop(grace=0))


def test_max_sessions_counts_both_workers(demo_upstream: DemoUpstream,
                                          loop_thread: LoopThread, tmp_path: Path) -> None:
    config = make_config(demo_upstream.port, limits={"max_sessions": 1})
    db = tmp_path / DB_FILE
    with ExitStack() as stack:
        a = stack.enter_context(_worker(config, loop_thread, db, 1))
        b = stack.enter_context(_worker(config, loop_thread, db, 2))
        with RawPOP3(_port(a)) as first:
            assert first.greeting.startswith(b"+OK")
            assert RawPOP3(_port(b)).greeting == TOO_MANY
            first.command("QUIT")
        wait_for(lambda: _held(db) == 0, what="the slot given back")
        with RawPOP3(_port(b)) as second:
            assert second.greeting.startswith(b"+OK")
            assert _held(db) == 1


def test_a_broken_slot_table_caps_each_worker_alone(demo_upstream: DemoUpstream,
                                                    loop_thread: LoopThread,
                                                    tmp_path: Path) -> None:
    config = make_config(demo_upstream.port, limits={"max_sessions": 1})
    db = tmp_path / DB_FILE
    with ExitStack() as stack:
        a = stack.enter_context(_worker(config, loop_thread, db, 1))
        b = stack.enter_context(_worker(config, loop_thread, db, 2))
        with slots_path(db).open("r+b") as table:
            table.write(b"POPSLOT9")  # another version's table: every slot call now fails
        with RawPOP3(_port(a)) as first, RawPOP3(_port(b)) as second:
            assert first.greeting.startswith(b"+OK") and second.greeting.startswith(b"+OK")
            assert RawPOP3(_port(a)).greeting == TOO_MANY  # this worker's own cap still holds


def test_a_damaged_slot_table_is_made_again_and_the_host_cap_holds(
        demo_upstream: DemoUpstream, loop_thread: LoopThread, tmp_path: Path) -> None:
    """Regression (review): a table without a valid header (its maker killed while making it,
    or overwritten) left every worker capping alone, with a warning, until a restart."""
    config = make_config(demo_upstream.port, limits={"max_sessions": 1})
    db = tmp_path / DB_FILE
    with ExitStack() as stack:
        a = stack.enter_context(_worker(config, loop_thread, db, 1))
        b = stack.enter_context(_worker(config, loop_thread, db, 2))
        with slots_path(db).open("r+b") as table:
            table.write(bytes(64))  # the header as a killed maker leaves it: zero
        with RawPOP3(_port(a)) as first:
            assert first.greeting.startswith(b"+OK")
            assert RawPOP3(_port(b)).greeting == TOO_MANY  # the host's one session is taken
            assert _held(db) == 1
        wait_for(lambda: _held(db) == 0, what="the slot to be given back")


def test_with_redis_configured_workers_use_redis_and_still_no_journal(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """Redis (several hosts) wins over the host's file for counters and verdicts; the caps
    stay in the file, and the local verdict level stays memory only (shared state_dir)."""
    url = "redis://127.0.0.1:1/0"  # never contacted: clients connect on first use
    config = make_config(1, lockout={"enabled": True, "redis_url": url},
                         scan={"enabled": True}, state_dir=str(tmp_path))
    server = ProxyServer(config, host=HostShare(tmp_path / DB_FILE, 1))
    try:
        assert server.lockout is not None and server.scan is not None
        store = server.lockout._store
        assert isinstance(store, FailoverStore) and isinstance(store._primary, RedisStore)
        assert isinstance(server.scan.cache._shared, RedisVerdicts)
        assert server.scan.cache._path is None
        assert server.slots is not None
    finally:
        loop_thread.call(server.stop(grace=0))


def test_a_session_begun_before_a_lockout_reload_still_counts_its_failures(
        demo_upstream: DemoUpstream, loop_thread: LoopThread, tmp_path: Path) -> None:
    """The old guard's host-file store is closed only after the sessions that hold it end: a
    closed store would refuse their logins ([SYS/TEMP] under fail_mode closed)."""
    config = make_config(demo_upstream.port, state_dir=str(tmp_path),
                         lockout={"enabled": True, "fail_mode": "closed",
                                  "base_delay": 0.01, "max_delay": 0.02},
                         limits={"auth_failure_delay": 0})
    with _worker(config, loop_thread, tmp_path / DB_FILE, 1) as server, \
            RawPOP3(_port(server)) as before:
        assert before.command("USER demo").startswith(b"+OK")

        async def reload() -> bool:
            changed = config.model_copy(update={"lockout": config.lockout.model_copy(
                update={"window": 60.0})})
            return server.reload_policy(changed)

        assert loop_thread.call(reload())
        assert before.command("PASS wrong").startswith(b"-ERR [AUTH]")
        assert before.command("USER demo").startswith(b"+OK")
        assert before.command("PASS demo").startswith(b"+OK")


def test_a_reload_raising_max_sessions_past_the_host_table_is_refused(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """The table is mapped by every worker and cannot grow: each worker refuses alike, with
    the reason, and keeps its policy; a raise it has room for is applied."""
    config = make_config(1, limits={"max_sessions": 10})
    with _worker(config, loop_thread, tmp_path / DB_FILE, 0) as server:
        def limits(max_sessions: int) -> Policy:
            return config.model_copy(update={"limits": config.limits.model_copy(
                update={"max_sessions": max_sessions})})

        async def reload(new: Policy) -> bool:
            return server.reload_policy(new)

        assert not loop_thread.call(reload(limits(10_000)))
        assert "restart popproxy" in server.refusal and "10000" in server.refusal
        assert server.config.limits.max_sessions == 10
        assert loop_thread.call(reload(limits(20)))
        assert server.config.limits.max_sessions == 20
