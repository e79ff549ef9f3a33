"""Which levels a scan service's verdict cache has, and keeping a big one out of GC walks.

The process's own level is always in memory; its durable copy is ``<state_dir>/verdicts.jsonl``
for a single process, and nothing for the workers of a host, which share the host file instead
(several processes would append to one JSON-lines file).  The shared level is Redis (one
server, Sentinel or Cluster) where the policy names one, else the host file for workers, else
none.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

from popproxy.policy import Scan
from popproxy.proxy.redis_client import connect
from popproxy.proxy.store_sqlite import SqliteVerdicts
from popproxy.proxy.verdict_cache import CACHE_FILE, VerdictCache
from popproxy.proxy.verdict_shared import RedisVerdicts, SharedVerdicts

# A verdict cache loaded with at least this many entries is moved out of the garbage
# collector's walks (gc.freeze): they live as long as the process, and a full collection over
# 20,000 of them (with their evidence) cost 0.07-1.0 s of a re-scoring STAT (bench/README.md).
# Below it a full collection is cheap, and tests that start many services freeze nothing.
FREEZE_LOADED_ENTRIES = 5_000
# gc.freeze is process-wide and a policy reload starts a new service before the old one
# closes: the frozen objects go back to the collector when the last freezing service closes.
_FROZEN_BY = [0]


def open_verdict_cache(policy: Scan, state_dir: Path, host_db: Path | None,
                       on_result: Callable[[str, int], None],
                       clock: Callable[[], float]) -> VerdictCache:
    """``host_db``: the SQLite file the workers of this host share (host_state), or None."""
    ttl = policy.cache_ttl
    shared: SharedVerdicts | None = None
    if policy.redis is not None:
        shared = RedisVerdicts(connect(policy.redis), ttl)
    elif host_db is not None:
        shared = SqliteVerdicts(host_db, ttl, clock)
    path = state_dir / CACHE_FILE if host_db is None else None
    return VerdictCache(path, shared, on_result, ttl=ttl, wall_clock=clock)


def freeze_if_big(loaded: int) -> bool:
    """gc.freeze() when ``loaded`` entries reach FREEZE_LOADED_ENTRIES; whether it froze (then
    the caller calls :func:`release_freeze` once when it closes)."""
    if loaded < FREEZE_LOADED_ENTRIES:
        return False
    gc.freeze()  # the loaded entries and everything before them: never garbage
    _FROZEN_BY[0] += 1
    return True


def release_freeze() -> None:
    """Frozen objects in reference cycles are never collected: once the last service that
    froze them is closed (a reload's old one, or at exit), the collector gets them back."""
    _FROZEN_BY[0] -= 1
    if not _FROZEN_BY[0]:
        gc.unfreeze()
