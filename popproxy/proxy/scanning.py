"""Scanning in the relay: judge each message once, keep POP3 sizes consistent (RFC 1939).

Design (docs/scanning.md): before the proxy first reports a message's size (STAT, LIST) or
delivers it (RETR, TOP), it makes sure the message has a cached verdict: it fetches the
original from the upstream, scans it, and remembers the action and the exact size of what the
client will receive.  STAT/LIST report those sizes; RETR/TOP deliver the rendered copy spooled
at listing time, or fetch the original again and apply the same action (actions are
deterministic), so LIST == RETR octets, UIDL is the upstream's (a held message's notice has
its own: proxy/released.py), and TOP is cut from the same
(possibly modified) message.  Clean messages are relayed byte for byte with no second scan.

Scans and renders run in worker processes (:mod:`popproxy.proxy.scan_pool`) with a hard
deadline: the event loop never parses a message.  A message that cannot be judged in time is
suspicious, not clean: it is delivered with ``scan.fail_open_action`` (or quarantined when
``fail_mode`` is closed), and that outcome is cached like any verdict.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import Counter

from popproxy.policy import Scan
from popproxy.proxy import scan_jobs
from popproxy.proxy.generation import compose, settings_parts
from popproxy.proxy.observe import Observer
from popproxy.proxy.scan_pool import WORKER_COMMAND, JobFailed, ScanPool
from popproxy.proxy.spool import sweep_stale_spools
from popproxy.proxy.verdict_cache import CachedVerdict
from popproxy.proxy.verdict_levels import freeze_if_big, open_verdict_cache, release_freeze
from popproxy.proxy.verdict_record import evidence_key
from popproxy.quarantine import QuarantineStore
from popproxy.scan import RENDER_VERSION, HostFeed, Scanner, Verdict
from popproxy.scan.evidence import Evidence
from popproxy.scan.verdict import delivered_action

log = logging.getLogger("popproxy.scan")

# Feed files are re-read in this one thread (the main process keeps the feeds' digests for
# the verdict generation); the scanning itself happens in the worker processes.
FEED_THREADS = 1
# A worker gets the scanner's own time budget plus this long to answer before it is killed:
# the scanner checks its budget between steps and answers "time-budget" itself when it can.
KILL_GRACE = 1.0
# Worker processes when scan.workers is unset: one per usable CPU, but at least two, so one
# message at its deadline never holds every other session's scan up.
MIN_WORKERS = 2
# Redis is no worker business either, and its settings may hold passwords.
NOT_FOR_WORKERS = {"verdict_ttl", "evidence_ttl", "listing_budget", "redis_url", "redis_sentinel",
                   "redis_cluster", "quarantine_retention"}
# Verdicts of messages that could not be judged.  "error" (a bug in the scanner) is judged
# again next session; a timeout or a crashed worker is remembered, so a hostile message costs
# its deadline once, not at every login.
TRANSIENT_CAUSES = frozenset({"error"})
# scan.quarantine_retention is applied at start and then at most this often (seconds): a pass
# reads every held message's metadata, and retention is counted in days.
RETENTION_INTERVAL = 3600.0
# popproxy_scan_unscanned_total's reason per unscanned cause; over the cap is counted apart.
UNSCANNED_REASONS = {"time-budget": "time_budget", "error": "error", "too-large": "too_large"}
TOO_LARGE_REASON = "too_large"
# Distinct evidence whose re-scored action is remembered per generation (see ``rescored``):
# far more than one listing's messages share (4,103 among bench/big_mailbox.py's 20,000),
# a few MB at most; past it the memo starts again.
MAX_RESCORE_MEMO = 50_000
def default_workers(cpu_share: int = 1) -> int:
    """Scan processes when scan.workers is unset: the usable CPUs split over ``cpu_share``
    proxy workers (each has its own pool: 16 workers x 16 CPUs would be 256 scanners)."""
    return max(MIN_WORKERS, len(os.sched_getaffinity(0)) // max(1, cpu_share))


class ScanService:
    """Shared by all sessions: the worker pool, the verdict cache, the spool and the quarantine."""

    def __init__(self, policy: Scan, state_dir: Path, observer: Observer,
                 clock: Callable[[], float] = time.time,
                 worker_command: Sequence[str] | None = None,
                 host_db: Path | None = None, cpu_share: int = 1) -> None:
        """``host_db``: the SQLite file the workers of this host share (host_state);
        ``cpu_share``: how many proxy workers share the host's CPUs (default_workers)."""
        self.policy = policy
        self.config = policy.to_settings()
        self._cache_counts: dict[str, Counter] = {}  # verdict_cache children by result
        # Only for the feeds' digests (generation): this process never scans.
        self.scanner = Scanner(self.config)
        self.cache = open_verdict_cache(policy, state_dir, host_db, self._count_cache, clock)
        self._frozen = freeze_if_big(len(self.cache))
        self.quarantine = QuarantineStore(policy.quarantine_dir or state_dir / "quarantine")
        self.spool_dir = state_dir / "spool"
        sweep_stale_spools(self.spool_dir)
        self._observer = observer
        observer.metrics.scan_listing_budget.set(policy.listing_budget)
        self._clock = clock
        self._next_retention = 0.0  # clock time of the next scan.quarantine_retention pass
        self.apply_retention()
        self._feed_pool = ThreadPoolExecutor(FEED_THREADS, thread_name_prefix="popproxy-feeds")
        # The TTLs are no worker business (and the deprecated alias would warn in each one).
        self._workers = ScanPool(policy.model_dump(mode="json", exclude=NOT_FOR_WORKERS),
                                 policy.workers or default_workers(cpu_share), self._count_kill,
                                 worker_command or WORKER_COMMAND)
        self._feed_versions: list[tuple[str, int | None]] = []
        # Re-scored action per distinct evidence, under _memo_generation only (``rescored``).
        self._memo: dict[tuple[object, ...], str] = {}
        self._generation_of: tuple[list[str] | None, str] = (None, "")  # (feed identities, it)
        # The same, by the evidence object's identity (pooled at load: verdict_record), which
        # spares building and hashing the key for each of a listing's 20,000 entries.
        self._memo_by_id: dict[int, tuple[Evidence, str]] = {}
        self._memo_generation = ""
        self._rescored_count = observer.metrics.scan_judged.labels("rescored")
        # The action code's output version is in the message part: a release whose tag/defang
        # renders different bytes must not reuse sizes cached by the one before (LIST would
        # differ from RETR).  A retrained combiner is in the evidence part: re-scored.
        model = self.scanner.model
        self._message_part, self._evidence_settings = settings_parts(
            policy.model_dump(mode="json"), RENDER_VERSION,
            model.version if model is not None else None)

    def ready_generation(self) -> str | None:
        """``generation()`` with no coroutine where no thread is needed (most calls); else None."""
        if self.policy.quarantine_retention is not None and self._clock() >= self._next_retention:
            return None
        versions = self._feed_stats()
        return self._composed(versions) if versions == self._feed_versions else None

    async def generation(self) -> str:
        """Changes when the settings or a feed file change: cached verdicts are then redone.

        Feed files are re-read in a thread: parsing a large feed must not stall the event loop
        (and with it every other session).  A feed counts by its content, not its mtime, so
        instances on hosts that fetched the same feed at different times share verdicts; a feed
        file that could not be loaded counts by its mtime (or as missing)."""
        versions = self._feed_stats()
        if self.policy.quarantine_retention is not None and self._clock() >= self._next_retention:
            # Reads every entry's metadata: in the file thread, not in the event loop.
            await asyncio.get_running_loop().run_in_executor(self._feed_pool, self.apply_retention)
        if versions != self._feed_versions:
            await asyncio.get_running_loop().run_in_executor(self._feed_pool, self._refresh_feeds)
            self._feed_versions = versions
            self._memo.clear()  # judged with the feeds as they were
            self._memo_by_id.clear()
        return self._composed(versions)

    def _feed_stats(self) -> list[tuple[str, int | None]]:
        versions: list[tuple[str, int | None]] = []  # (path, mtime or None: unreadable)
        for feed in self.scanner.feeds:
            try:
                versions.append((str(feed.path), os.stat(feed.path).st_mtime_ns))
            except OSError:
                versions.append((str(feed.path), None))
        return versions

    def _composed(self, versions: list[tuple[str, int | None]]) -> str:
        identities = [_feed_identity(feed, mtime)
                      for feed, (_, mtime) in zip(self.scanner.feeds, versions, strict=True)]
        if identities != self._generation_of[0]:  # hashed once per feed change, not per login
            self._generation_of = (identities, compose(self._message_part,
                                                       self._evidence_settings, identities))
        return self._generation_of[1]

    def apply_retention(self) -> list[str]:
        """Remove held messages past ``scan.quarantine_retention`` (none when unset), at most
        once per RETENTION_INTERVAL: called at start and at each session's first listing."""
        retention, now = self.policy.quarantine_retention, self._clock()
        if retention is None or now < self._next_retention:
            return []
        self._next_retention = now + RETENTION_INTERVAL
        removed = self.quarantine.purge(retention, now)
        if removed:
            log.info("quarantine: removed %d messages held longer than %g s (retention)",
                     len(removed), retention)
        return removed

    def _refresh_feeds(self) -> None:
        for feed in self.scanner.feeds:
            feed.refresh()

    @property
    def deadline(self) -> float:
        """Seconds a worker gets for one job before it is killed."""
        return self.policy.time_budget + KILL_GRACE

    async def judge(self, original: Path, truncated: bool = False
                    ) -> tuple[Verdict, Evidence | None]:
        """The worker's verdict and its evidence; a job killed at its deadline or a dead
        worker is "unscanned" with cause "time-budget" (remembered), a scanner error "error"
        (judged again); neither has evidence.  ``original`` is a spool file; ``truncated``: it
        is the head of a message over the cap.
        """
        started = time.monotonic()
        kept: Evidence | None = None
        try:
            answer = await self._workers.call(
                {"op": "scan", "in": str(original), "truncated": truncated}, b"", self.deadline)
            verdict = scan_jobs.verdict_from_json(answer["verdict"])
            if answer.get("evidence") is not None:
                kept = Evidence.from_json(answer["evidence"])
        except JobFailed as exc:
            if exc.reason == "unavailable":  # no worker: judged again once one starts
                verdict = Verdict.unscanned("error", "no scan worker could start")
            elif exc.reason == "error":
                log.error("scanner failed: %s", exc.detail)
                verdict = Verdict.unscanned("error", f"scanner error {exc.detail}")
            else:
                how = "killed at" if exc.reason == "timeout" else "crashed before"
                verdict = Verdict.unscanned("time-budget",
                                            f"scan {how} the {self.deadline:g} s deadline")
        except (KeyError, TypeError, ValueError):
            log.error("scan worker sent an unreadable verdict")
            verdict = Verdict.unscanned("error", "unreadable verdict")
        metrics = self._observer.metrics
        metrics.scan_duration.observe(time.monotonic() - started)
        if verdict.action == "unscanned":  # a scanner failure (the fail-open alert's count)
            metrics.scan_unscanned.labels(UNSCANNED_REASONS.get(verdict.cause or "", "error")).inc()
        for signal in verdict.signals:
            metrics.signals_hit.labels(signal.name).inc()
        return verdict, kept

    def too_large(self, size: int, action: str) -> dict[str, object]:
        """Count a message over ``max_message_bytes`` (judged on its head); the fields of its
        ``unscanned`` audit event (issue 19 item 12: audited like every verdict)."""
        self._observer.metrics.scan_unscanned.labels(TOO_LARGE_REASON).inc()
        return {"reason": TOO_LARGE_REASON, "size": size, "action": action,
                "cap": self.policy.max_message_bytes}

    def rescore(self, kept: Evidence) -> Verdict | None:
        """The verdict under the current feeds, weights, model and thresholds, from cached
        evidence (feeds as loaded by the last :meth:`generation`); None when it cannot be
        re-scored (truncated): the message is judged from its bytes.  A few dictionary look-ups
        per link host: cheap enough for the event loop."""
        if kept.truncated:
            return None
        return self.scanner.rescore(kept)

    async def carry_over(self, key: str, cached: CachedVerdict, generation: str,
                         too_large: bool) -> CachedVerdict | None:
        """:meth:`rescored`, counted and stored when it keeps the action (None: download)."""
        carried = self.rescored(cached, generation, too_large)
        if carried is not None:
            self._rescored_count.inc()
            # Batched: written once per listing (VerdictCache.flush, verdict_journal).
            await self.cache.store(key, carried, carried_from=cached.generation)
        return carried

    async def usable_verdicts(self, keys: list[str], generation: str,
                              too_large: Callable[[CachedVerdict], bool]
                              ) -> dict[str, CachedVerdict]:
        """The verdict of each key that has a usable one: current, or carried over from an
        older evidence generation (:meth:`rescored`; ``too_large`` tells which were judged on
        their head).  The keys left out must be judged from the message.  One batch: the
        shared level is read once and written once (``get_many``/``put_many``), however many
        keys, and no coroutine runs per key (a 20,000-message listing, bench/README.md)."""
        # lookup_many's two steps: the shared level's coroutine only for keys not here.
        usable, ask = self.cache.lookup_local(keys, generation)
        if ask:
            await self.cache.ask_shared(ask, generation, usable)
        carried: list[tuple[str, CachedVerdict, str]] = []
        for key, cached in list(usable.items()):
            if cached.generation == generation:
                continue
            moved = self.rescored(cached, generation, too_large(cached))
            if moved is None:
                del usable[key]  # its action changed: downloaded and judged again
                continue
            usable[key] = moved
            carried.append((key, moved, cached.generation))
        if carried:
            self._rescored_count.inc(len(carried))
            await self.cache.store_many(carried)  # in the file at the listing's flush
        return usable

    def rescored(self, cached: CachedVerdict, generation: str,
                 too_large: bool = False) -> CachedVerdict | None:
        """``cached`` carried over to ``generation`` when re-scoring its evidence keeps its
        action; None when the message must be downloaded and judged again (the action changed,
        or the evidence is missing, truncated or of a render that failed).

        The entry keeps its score, reasons and size: the client's copy is rendered from them,
        so it stays byte for byte what the size announced (RFC 1939 section 5), and a changed
        reason alone is not worth reading the message again.  ``too_large``: judged on its
        head (worse than tag is quarantined, as at listing).
        """
        if (cached.evidence is None or cached.transient
                or cached.reasons[:1] == (scan_jobs.RENDER_FAILED,)):
            return None
        action = self._rescored_action(cached.evidence, generation)
        if action is None:
            return None
        if too_large:  # as delivered_action(too_large=True) on the re-scored action
            action = "quarantine" if action in ("defang", "quarantine") else "tag"
        if action != cached.action:
            return None
        return cached.carried_to(generation)

    def _rescored_action(self, kept: Evidence, generation: str) -> str | None:
        """``final_action(rescore(kept))``, once per distinct evidence and generation: most
        messages of a mailbox have the same few (plain text, no links), and re-scoring all
        20,000 of one was half of a STAT after a feed change (bench/README.md)."""
        if generation != self._memo_generation or len(self._memo_by_id) >= MAX_RESCORE_MEMO:
            self._memo.clear()
            self._memo_by_id.clear()
            self._memo_generation = generation
        seen = self._memo_by_id.get(id(kept))
        if seen is not None and seen[0] is kept:  # held: its id cannot name another object
            return seen[1]
        memo_key = evidence_key(kept)
        action = self._memo.get(memo_key)
        if action is None:
            verdict = self.rescore(kept)
            if verdict is None:
                return None
            action = self._memo[memo_key] = self.final_action(verdict)
        self._memo_by_id[id(kept)] = (kept, action)
        return action

    def final_action(self, verdict: Verdict, too_large: bool = False) -> str:
        """:func:`popproxy.scan.verdict.delivered_action` under this policy."""
        return delivered_action(verdict, self.policy.fail_mode, self.policy.fail_open_action,
                                too_large)

    @staticmethod
    def transient(verdict: Verdict) -> bool:
        return verdict.cause in TRANSIENT_CAUSES

    async def render_to(self, original: Path, entry: CachedVerdict, out: Path) -> int:
        """Render ``entry``'s action on the spooled ``original`` into the spool file ``out``
        (in a worker); its size in octets.  Raises JobFailed when it cannot be done in time."""
        order = scan_jobs.RenderOrder(scan_jobs.as_action(entry.action), entry.score, entry.reasons,
                                      entry.scanned_at, entry.quarantine_id)
        answer = await self._workers.call(
            {"op": "render", "order": order.to_json(), "in": str(original), "out": str(out)},
            b"", self.deadline)
        size = answer.get("size")
        if type(size) is not int or size < 0:
            raise JobFailed("error", "unreadable size")
        return size

    async def render_sized_to(self, original: Path, entry: CachedVerdict, out: Path,
                              size: int) -> bool:
        """The client's copy at exactly ``size`` octets (scan_jobs.render_sized), in a worker;
        whether the original must be held (the copy is our padded notice).  Raises JobFailed."""
        order = scan_jobs.RenderOrder(scan_jobs.as_action(entry.action), entry.score,
                                      entry.reasons, entry.scanned_at, entry.quarantine_id)
        answer = await self._workers.call(
            {"op": "render_sized", "order": order.to_json(), "in": str(original),
             "out": str(out), "size": size}, b"", self.deadline)
        if answer.get("size") != size or type(answer.get("held")) is not bool:
            raise JobFailed("error", "unreadable sized render")
        return bool(answer["held"])

    def now(self) -> float:
        return self._clock()

    def _count_cache(self, result: str, count: int) -> None:
        # Once per listing (local hits) or message: labels() is a locked look-up that cost more
        # than the cache's own (bench/README.md), so each result's child is kept.
        child = self._cache_counts.get(result)
        if child is None:
            child = self._cache_counts[result] = self._observer.metrics.verdict_cache.labels(
                result)
        child.inc(count)

    def _count_kill(self, reason: str) -> None:
        self._observer.metrics.scan_worker_kills.labels(reason).inc()

    @property
    def closed(self) -> bool:
        return self._workers.closed

    def close(self) -> None:
        self.cache.flush()  # verdicts carried over by sessions still open
        self._unfreeze()
        self._workers.close()
        self._feed_pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """``close``, waiting for the workers, and the shared cache's Redis connections."""
        self.cache.flush()
        self._unfreeze()
        self._feed_pool.shutdown(wait=False, cancel_futures=True)
        await self._workers.aclose()
        await self.cache.close()

    def _unfreeze(self) -> None:
        if self._frozen:
            self._frozen = False
            release_freeze()


def _feed_identity(feed: HostFeed, mtime_ns: int | None) -> str:
    """The loaded content's digest; a file that could not be loaded as it is now counts by its
    mtime (judged again once it loads), a missing one as missing."""
    if mtime_ns == feed.mtime_ns:
        return feed.digest
    return f"{feed.path}:{'missing' if mtime_ns is None else mtime_ns}"
