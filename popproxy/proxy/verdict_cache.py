"""Scan results remembered per message (upstream, user, UIDL), so sizes stay consistent.

RFC 1939 wants STAT and LIST octets to equal what RETR returns, and UIDL never changes.  The
proxy scans a message before it first reports its size, stores what the client will receive
(action, reasons, size), and re-applies the same action to the same original on RETR/TOP.

Two levels.  This process's entries are kept in memory and appended to a JSON-lines file in the
state directory (they survive restarts).  With ``scan.redis_url`` they are also written to Redis,
shared by every instance behind the balancer: a client whose next session lands on another
instance gets the verdict (and so the sizes) it was shown before, without a second scan.  Keys
are hashes (no usernames in the file or in Redis); Redis keys carry a TTL (batched per listing)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from popproxy.proxy.generation import same_message_generation
from popproxy.proxy.verdict_journal import (
    CARRIED,
    MAX_PENDING,
    CarriedBatch,
    open_private,
    parse_carried,
)
from popproxy.proxy.verdict_record import (
    ACTIONS,
    OPTIONAL,
    CachedVerdict,
    cache_key,
    from_record,
    mailbox_key,
    to_record,
)
from popproxy.proxy.verdict_shared import REDIS_PREFIX, RedisVerdicts, SharedVerdicts

# The record names moved to verdict_record, and the shared level to verdict_shared, stay
# importable from here.
__all__ = ["ACTIONS", "CACHE_FILE", "FORGOTTEN", "OPTIONAL", "REDIS_PREFIX", "CachedVerdict",
           "RedisVerdicts",
           "SharedVerdicts", "VerdictCache", "cache_key", "from_record", "mailbox_key", "to_record"]

log = logging.getLogger("popproxy.scan")

CACHE_FILE = "verdicts.jsonl"
# After a failed Redis call, judge locally without asking Redis for this long: a dead Redis then
# costs one timeout per few seconds, not one per message of a long listing.
RETRY_AFTER = 5.0
# With Redis holding every verdict, this process keeps at most this many (the oldest go first;
# a later lookup asks Redis): about 50 MB.  Without Redis the local level is the only one and
# is bounded by the TTL alone.
MAX_LOCAL_WITH_SHARED = 100_000
# Expired entries are swept from memory every this many new verdicts, and the file is rewritten
# without them when it holds more than twice as many lines as live entries (plus this slack).
SWEEP_EVERY = 10_000
# A file line that drops its key's entry (the upstream no longer lists the message).
FORGOTTEN = "forgotten"


def _ignore(result: str, count: int) -> None:
    pass


def _line(key: str, entry: CachedVerdict) -> str:
    return json.dumps({"key": key, **to_record(entry)}) + "\n"


class VerdictCache:
    """This process's verdicts (last line for a key wins on load), then Redis's if configured.

    ``on_result`` is told how each lookup was answered (local_hit, shared_hit, miss) and of each
    lookup or write that could not use Redis (shared_error), with how many were: the proxy counts
    them (a listing's local hits in one call, not one per message).
    """

    def __init__(self, path: Path | None, shared: SharedVerdicts | None = None,
                 on_result: Callable[[str, int], None] = _ignore,
                 clock: Callable[[], float] = time.monotonic, ttl: float | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        """``ttl``: seconds after ``scanned_at`` (wall-clock time) a verdict is judged again,
        here as in Redis (``scan.verdict_ttl``); None keeps verdicts forever."""
        self._path = path
        self._entries: dict[str, CachedVerdict] = {}
        self._boxes: dict[str, set[str]] = {}  # mailbox hash -> keys of its entries
        self._shared = shared
        self._shared_name = "Redis" if isinstance(shared, RedisVerdicts) else "host file"
        self._on_result = on_result
        self._clock = clock
        self._ttl = ttl
        self._wall = wall_clock
        self._retry_at: float | None = None  # set while Redis is failing
        self._lines = 0  # records in the file (a carried line counts one per key)
        self._carried = CarriedBatch()  # carried over, not written yet (verdict_journal)
        self._since_sweep = 0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        pool: dict[tuple[object, ...], Any] = {}  # verdict_record.EvidencePool
        for number, line in enumerate(path.read_text().splitlines(), 1):
            self._lines += 1
            try:
                record = json.loads(line)
                if CARRIED in record:
                    self._load_carried(record)
                    continue
                key = record.pop("key")
                if record.get(FORGOTTEN):
                    self._drop(key)
                    continue
                entry = from_record(record, pool)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s:%d: unreadable verdict cache line skipped", path, number)
                continue
            self._drop(key)  # the last line for a key wins, and is newest
            if not self._expired(entry):
                self._add(key, entry)
        self._limit()
        self._compact_if_sparse()

    def _load_carried(self, record: dict[str, Any]) -> None:
        old, new, keys = parse_carried(record)
        for key in keys:
            self._lines += 1
            entry = self._entries.get(key)
            if entry is not None and entry.generation == old:
                self._entries[key] = entry.carried_to(new)

    # ------------------------------------------------------------ this process only
    def get(self, key: str) -> CachedVerdict | None:
        entry = self._entries.get(key)
        if entry is not None and self._expired(entry):
            self._drop(key)
            return None
        return entry

    def put(self, key: str, entry: CachedVerdict) -> None:
        self._drop(key)  # and its carried-over line, if one was pending
        self._add(key, entry)
        if self._path is not None:
            with open_private(self._path, "a") as handle:
                handle.write(_line(key, entry))
            self._lines += 1
        self._limit()
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self._since_sweep = 0
            self._sweep()

    def carry(self, key: str, entry: CachedVerdict, old_generation: str) -> None:
        """Like :meth:`put` for ``entry`` carried over from ``old_generation`` (the same verdict
        re-scored to the same action): written at the next :meth:`flush`, in one line."""
        held = self._entries.get(key)
        if held is not None and held.mailbox == entry.mailbox:
            self._entries[key] = entry  # same mailbox: its key set is unchanged
        else:  # carried from Redis's copy: held here from now on
            self._drop(key)
            self._add(key, entry)
        if self._path is not None:
            self._carried.add(key, old_generation, entry.generation)
            if len(self._carried) >= MAX_PENDING:
                self.flush()

    def flush(self) -> None:
        """Append the carried-over verdicts (once per listing: verdict_journal explains)."""
        if not self._carried or self._path is None:
            return
        lines, count = self._carried.take(self._is_current)
        if not lines:
            return
        try:
            with open_private(self._path, "a") as handle:
                handle.writelines(lines)
        except OSError as exc:  # called from session ends: losing these costs a re-score only
            log.warning("verdict cache: cannot append to %s: %s", self._path, exc)
            return
        self._lines += count

    def _is_current(self, key: str, generation: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.generation == generation

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, key: str, entry: CachedVerdict) -> None:
        self._entries[key] = entry
        if entry.mailbox:
            self._boxes.setdefault(entry.mailbox, set()).add(key)

    def _drop(self, key: str) -> None:
        self._carried.discard(key)
        entry = self._entries.pop(key, None)
        if entry is not None and entry.mailbox:
            keys = self._boxes.get(entry.mailbox)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._boxes[entry.mailbox]

    def _expired(self, entry: CachedVerdict) -> bool:
        return self._ttl is not None and entry.scanned_at < self._wall() - self._ttl

    def _limit(self) -> None:
        """With Redis, drop the oldest local entries past MAX_LOCAL_WITH_SHARED."""
        if self._shared is None:
            return
        while len(self._entries) > MAX_LOCAL_WITH_SHARED:
            self._drop(next(iter(self._entries)))

    def _sweep(self) -> None:
        for key in [k for k, e in self._entries.items() if self._expired(e)]:
            self._drop(key)
        self._compact_if_sparse()

    def _compact_if_sparse(self) -> None:
        """Rewrite the file with the live entries only (atomically) once it is mostly dead."""
        if self._path is None or self._lines <= 2 * len(self._entries) + SWEEP_EVERY:
            return
        # Per process: the workers of one host share state_dir, and two compactions writing
        # one temporary file at once would interleave their lines.
        tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
        try:
            with open_private(tmp, "w") as handle:
                handle.writelines(_line(k, e) for k, e in self._entries.items())
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("verdict cache: cannot rewrite %s: %s", self._path, exc)
            return
        self._lines = len(self._entries)
        self._carried.clear()  # every entry, carried ones included, is in the new file

    # ------------------------------------------------------------ both levels
    async def lookup(self, key: str, generation: str) -> CachedVerdict | None:
        """A verdict judged under ``generation``; else one judged under the same message part
        of it (only its evidence part differs: the caller re-scores it, see
        ``split_generation``); else None: the message must be judged now."""
        return (await self.lookup_many([key], generation)).get(key)

    async def lookup_many(self, keys: list[str], generation: str) -> dict[str, CachedVerdict]:
        """:meth:`lookup` of each key (those with nothing usable left out); the keys with no
        current local verdict cost one shared round trip together (``get_many``)."""
        found, ask = self.lookup_local(keys, generation)
        if ask:
            await self.ask_shared(ask, generation, found)
        return found

    def lookup_local(self, keys: list[str], generation: str
                     ) -> tuple[dict[str, CachedVerdict], list[str]]:
        """:meth:`lookup_many` in this process only: what it found, and the keys with no
        current verdict here (for ``ask_shared``).  Synchronous: a login whose verdicts are
        all here awaits nothing (no coroutine)."""
        found: dict[str, CachedVerdict] = {}
        ask: list[str] = []
        hits = 0
        # get() inlined, with the expiry cut-off taken once: two Python calls per message of
        # every login's listing (issue 18)
        entries, cutoff = self._entries, None if self._ttl is None else self._wall() - self._ttl
        for key in keys:
            local = entries.get(key)
            if local is not None and cutoff is not None and local.scanned_at < cutoff:
                self._drop(key)
                local = None
            if local is not None and local.generation == generation:
                hits += 1
                found[key] = local
                continue
            if local is not None and same_message_generation(local.generation, generation):
                found[key] = local  # stale: used unless the shared level has a current one
            ask.append(key)
        if hits:
            self._on_result("local_hit", hits)
        return found, ask

    async def ask_shared(self, keys: list[str], generation: str,
                         found: dict[str, CachedVerdict]) -> None:
        """The rest of :meth:`lookup_many`: ``keys`` (``lookup_local``'s) asked of the shared
        level, what it has added to ``found`` (or counted as stale or missed)."""
        if self._shared is None or not self._shared_usable():
            if self._shared is None:
                for key in keys:
                    self._on_result("stale" if key in found else "miss", 1)
            return
        try:
            shared = await self._shared.get_many(keys)
        except Exception as exc:  # any client/network error or our timeout: judge it here
            self._shared_failed("read", exc)
            return
        self._shared_ok()
        for key in keys:
            entry = shared.get(key)
            if entry is not None and entry.generation == generation:
                self.put(key, entry)  # the next session here needs no Redis round trip
                self._on_result("shared_hit", 1)
                found[key] = entry
                continue
            if key not in found and entry is not None and same_message_generation(
                    entry.generation, generation):
                found[key] = entry
            self._on_result("stale" if key in found else "miss", 1)

    def forget_unlisted(self, mailbox: str, listed: set[str]) -> list[str]:
        """Drop this process's entries of ``mailbox`` whose key is not in ``listed`` (the
        messages the upstream lists now): a message deleted upstream needs no verdict.  The
        keys dropped (the caller deletes them from Redis too)."""
        held = self._boxes.get(mailbox)
        # A set difference, not a loop: every login's listing asks (issue 18), most drop none.
        gone = [] if held is None or held <= listed else list(held - listed)
        for key in gone:
            self._drop(key)
        if gone and self._path is not None:
            with open_private(self._path, "a") as handle:
                handle.writelines(json.dumps({"key": key, FORGOTTEN: 1}) + "\n" for key in gone)
            self._lines += len(gone)
        return gone

    async def store(self, key: str, entry: CachedVerdict, carried_from: str = "") -> None:
        """Remember a fresh verdict here and in Redis (a transient one nowhere);
        ``carried_from``: the generation it was carried over from (:meth:`carry`)."""
        await self.store_many([(key, entry, carried_from)])

    async def store_many(self, items: list[tuple[str, CachedVerdict, str]]) -> None:
        """:meth:`store` of each (key, entry, carried_from), in one shared round trip."""
        kept = [(key, entry) for key, entry, _ in items if not entry.transient]
        for key, entry, carried_from in items:
            if entry.transient:
                continue
            if carried_from:
                self.carry(key, entry, carried_from)
            else:
                self.put(key, entry)
        if not kept or self._shared is None or not self._shared_usable():
            return
        try:
            await self._shared.put_many(kept)
        except Exception as exc:  # the verdict is still good here; others judge it themselves
            self._shared_failed("write", exc)
            return
        self._shared_ok()

    async def forget(self, mailbox: str, listed: set[str]) -> int:
        """``forget_unlisted``, and the same keys deleted from Redis; how many were dropped.
        Entries only other instances wrote expire by the TTL (docs/scanning.md)."""
        gone = self.forget_unlisted(mailbox, listed)
        if gone:
            await self.forget_shared(gone)
        return len(gone)

    async def forget_shared(self, gone: list[str]) -> None:
        """Delete from Redis the keys ``forget_unlisted`` dropped here (a login's listing
        calls this only when some were: most drop none, and need no coroutine)."""
        if self._shared is not None and self._shared_usable():
            try:
                await self._shared.delete(gone)
            except Exception as exc:  # the TTL still ends them
                self._shared_failed("delete", exc)
                return
            self._shared_ok()

    def _shared_usable(self) -> bool:
        if self._retry_at is not None and self._clock() < self._retry_at:
            self._on_result("shared_error", 1)
            return False
        return True

    def _shared_failed(self, operation: str, exc: BaseException) -> None:
        self._on_result("shared_error", 1)
        if self._retry_at is None:  # once per outage: a listing must not flood the log
            log.warning("verdict cache: %s %s failed (%s): judging messages locally, "
                        "retrying every %.0f s", self._shared_name, operation,
                        exc.__class__.__name__, RETRY_AFTER)
        self._retry_at = self._clock() + RETRY_AFTER

    def _shared_ok(self) -> None:
        if self._retry_at is not None:
            log.info("verdict cache: %s answers again: verdicts are shared again",
                     self._shared_name)
            self._retry_at = None

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()
