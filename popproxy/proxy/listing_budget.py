"""The first listing of a big mailbox within ``scan.listing_budget`` (issue 17, docs/scanning.md).

A session's first STAT or LIST judges the messages it has no verdict for, newest first (the
highest message numbers: what a reader looks at first), until the budget is spent.  Messages
with a cached verdict (current or re-scored from evidence) cost nothing and are always
answered from it.  The rest are listed at the upstream's size and judged when the client asks
for them (RETR/TOP); what it then receives must be exactly that size (RFC 1939 section 5:
LIST's octet count is what RETR returns within the session), so their actions take a
size-preserving form (``scan_jobs.render_sized``): tag and defang become the equal-length
defang (a tag with its marker over the start of the Subject when there is room), quarantine
(or a defang impossible in place) our notice padded to that size, with the original held.
The verdict is cached with its normal rendered size: later sessions see the normal form.

A message over ``scan.max_message_bytes`` left for RETR is held behind the padded notice in
that session (it could only be judged on its head, and the tag it then gets adds header
lines); the next listing judges it the usual way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from popproxy.metrics import Metrics
from popproxy.proxy.delivery import send_file
from popproxy.proxy.mailbox import TOO_LARGE, MailboxView, stat_reply
from popproxy.proxy.relay import ClientSink
from popproxy.proxy.scan_pool import JobFailed
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.settings import AuditFn
from popproxy.proxy.spool import Spooled, write_private
from popproxy.proxy.upstream import UpstreamConnection
from popproxy.proxy.verdict_cache import CachedVerdict
from popproxy.scan.sized_notice import padded_notice

log = logging.getLogger("popproxy.scan")

# The reason a message listed before it was judged carries until RETR/TOP judges it.
DEFERRED = "listing-budget"
# Messages per batch of the first listing: one shared-level round trip each way and one
# turn of the event loop per batch.  500 cached verdicts take 5-10 ms here (bench/README.md:
# 20,000 in 0.2-0.3 s of CPU), so another session waits at most that long behind a listing,
# and a Redis pipeline stays a few hundred KB.
LISTING_BATCH = 500
# Downloads for judging stop this share of the budget before it ends: the message being
# judged at the deadline, the deferred ones' entries and the answer itself still take time,
# and the client was promised the answer within the budget (bench/big_mailbox.py's cold
# 20,000-message STAT took 20.06 s at a 20 s budget without it).
LISTING_MARGIN = 0.05


def _judged_on_head(entry: CachedVerdict) -> bool:
    return TOO_LARGE in entry.signals  # over scan.max_message_bytes (mailbox._too_large_entry)


class BudgetedMailbox(MailboxView):
    """A ``MailboxView`` whose first STAT/LIST judges within ``scan.listing_budget``."""

    __slots__ = ("_deadline", "_deferred", "_listed", "_sized")

    def __init__(self, upstream: UpstreamConnection, client: ClientSink, service: ScanService,
                 upstream_name: str, user: str, audit: AuditFn, metrics: Metrics) -> None:
        super().__init__(upstream, client, service, upstream_name, user, audit, metrics)
        self._deadline: float | None = None  # loop time the first listing must end by
        self._listed = False
        # Listed at the upstream's size, not judged yet (made when the budget runs out: an
        # empty set costs 216 bytes per idle session).
        self._deferred: set[int] | None = None
        self._sized: dict[int, Path] = {}  # judged at RETR: the client's copy, at that size

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _first_listing(self) -> None:
        """Judge what fits in the budget, newest first; the rest is deferred (listed as is)."""
        if self._listed:
            return
        self._listed = True
        started = self._now()
        budget = self._service.policy.listing_budget
        self._deadline = started + budget * (1 - LISTING_MARGIN)
        try:
            # Here, not in _judge_listing (in this order: the generation may purge the
            # quarantine before _load lists it): the upstream's answers resume a frame less.
            if self._generation is None:  # (no feed changed: no coroutine, most sessions)
                self._generation = self._service.ready_generation()
            generation = self._generation or await self._current_generation()
            await self._judge_listing(generation, await self._load())
        finally:
            self._deadline = None
            self._metrics.scan_listing_seconds.observe(self._now() - started)

    async def _judge_listing(self, generation: str, listed: dict[int, bytes]) -> None:
        """Every listed message's verdict, newest first, LISTING_BATCH at a time: the cached
        ones looked up, re-scored and stored as one batch in one synchronous loop (no coroutine
        per message), the others downloaded (``_judge_new``, within the budget).  Between
        batches the loop runs other sessions: a mailbox of 20,000 re-scored verdicts must not
        hold every other client's command up for its whole listing."""
        # ``listed``: _load's.  Upstream messages only: the proxy's own (a released original,
        # released.py) have no cache key and are never judged.
        keys, entries, deleted = self._keys, self._entries, self.deleted  # (made by _load)
        todo = [n for n in sorted(listed, reverse=True)
                if n in keys and n not in entries and n not in deleted]
        for start in range(0, len(todo), LISTING_BATCH):
            if start:  # yield between batches: a batch of cache hits never awaits anything real
                await asyncio.sleep(0)
            batch = todo[start:start + LISTING_BATCH]
            usable = await self._service.usable_verdicts([keys[n] for n in batch],
                                                         generation, _judged_on_head)
            for number in batch:
                cached = usable.get(keys[number])
                if cached is None:
                    cached = await self._judge_new(number, keys[number])
                if cached.action == "quarantine":  # released? (_keep); else no call per message
                    self._keep(number, cached)
                else:
                    entries[number] = cached

    def _all_held(self) -> list[tuple[int, CachedVerdict]] | None:
        """``_live_entries`` without a coroutine where every listed message's verdict is held
        and none is deleted (after the first listing, the usual case); None otherwise."""
        listed, entries = self._numbers, self._entries
        if listed is None or len(entries) != len(listed) or self.deleted:
            return None  # (held ones are listed ones: equal counts, all held)
        self._service.cache.flush()  # the listing's carried-over verdicts, in one append
        return [(n, entries[n]) for n in sorted(listed)]

    async def _live_entries(self) -> list[tuple[int, CachedVerdict]]:
        # After the first listing every verdict is held: a plain loop, no coroutine per
        # message (one a failed listing left without a verdict is judged by entry(), as
        # without a budget).
        held = self._all_held()
        if held is not None:
            return held
        listed = self._numbers if self._numbers is not None else await self._load()
        entries, deleted = self._entries, self.deleted
        numbers = [n for n in sorted(listed) if n not in deleted]
        others: dict[int, CachedVerdict] = {}  # not held in _entries (released.py's own)
        for number in [n for n in numbers if n not in entries]:
            entry = await self.entry(number)
            if entry is not None and number not in entries:
                others[number] = entry
        self._service.cache.flush()
        return [(n, entries.get(n) or others[n]) for n in numbers
                if n in entries or n in others]

    async def _judge_new(self, number: int, key: str) -> CachedVerdict:
        if self._deadline is None or self._now() < self._deadline:
            return await super()._judge_new(number, key)
        if self._deferred is None:
            self._deferred = set()
        self._deferred.add(number)
        self._metrics.scan_listing_deferred.inc()
        size = self._sizes[number]
        # Never cached, never delivered as it is: deliver() judges it first.
        return CachedVerdict("pass", 0.0, (DEFERRED,), size, self._service.now(),
                             await self._current_generation(), signals=(DEFERRED,),
                             transient=True, mailbox=self._box)

    async def stat(self) -> bytes:
        await self._first_listing()
        held = self._all_held()  # (every login's STAT: no coroutine for MailboxView.stat's)
        if held is None:
            return await super().stat()
        return stat_reply(held)

    async def list(self, number: int | None) -> bytes:
        if number is None:  # LIST n asks for one message: judged alone, as without a budget
            await self._first_listing()
        return await super().list(number)

    async def deliver(self, number: int, top_lines: int | None) -> None:
        if self._deferred is None or number not in self._deferred or number in self.deleted:
            await super().deliver(number, top_lines)
            return
        path = self._sized.get(number)
        if path is None:
            path = await self._judge_deferred(number)
            self._sized[number] = path
        self._count_relayed(await send_file(self._client, (path,), top_lines))
        if number not in self._deferred:  # judged clean: relayed from the upstream from now on
            del self._sized[number]
            path.unlink(missing_ok=True)

    async def _judge_deferred(self, number: int) -> Path:
        """Judge a deferred message now; the spool file of what the client receives, of
        exactly the size it was told.  The verdict is cached at its normal size."""
        service, size = self._service, self._sizes[number]
        if size > service.policy.max_message_bytes:
            whole = await self._spool_original(number)
            self._metrics.scan_judge_bytes.inc(whole.length)
            entry = self._deferred_entry(number, "quarantine", whole.digest)
            self._audit("unscanned", message=number, deferred=True,
                        **service.too_large(size, "quarantine"))
            return self._held(number, whole, entry, size)
        original = await self._spool_original(number)
        self._metrics.scan_judge_bytes.inc(original.length)
        verdict, kept = await service.judge(original.path)
        action = service.final_action(verdict)
        self._count(verdict.action, action)
        self._metrics.scan_judged.labels("downloaded").inc()
        entry = replace(self._deferred_entry(number, action, original.digest),
                        score=verdict.score, reasons=verdict.reasons,
                        signals=tuple(s.name for s in verdict.signals),
                        transient=service.transient(verdict), evidence=kept)
        self._audit("verdict", message=number, action=action, score=round(verdict.score, 2),
                    reasons=list(entry.reasons[:5]), quarantine_id=entry.quarantine_id,
                    deferred=True)
        if action == "pass":
            clean = replace(entry, quarantine_id="")
            await service.cache.store(self._keys[number], clean)
            # Its size is the upstream's, as listed: a later RETR/TOP relays it like any clean
            # message, so the session's spool does not keep a copy of every deferred message
            # (14,300 of bench/big_mailbox.py's cold session: 270 MB, whose removal at the
            # session's end then held the event loop for over 30 s).
            self._entries[number] = clean
            if self._deferred is not None:
                self._deferred.discard(number)
            return original.path
        return await self._sized_copy(number, original, entry, size)

    def _deferred_entry(self, number: int, action: str, digest: str) -> CachedVerdict:
        generation = self._generation or ""
        return CachedVerdict(action, 0.0, (DEFERRED,), self._sizes[number], self._service.now(),
                             generation, digest, mailbox=self._box)

    async def _sized_copy(self, number: int, original: Spooled, entry: CachedVerdict,
                          size: int) -> Path:
        """Render the size-preserving copy; cache the verdict at its normal rendered size."""
        out = self._spool_file(number, ".sized")
        try:
            held = await self._service.render_sized_to(original.path, entry, out, size)
        except JobFailed as exc:
            log.warning("message %d: sized %s failed (%s): held", number, entry.action,
                        exc.reason)
            return self._held(number, original, entry, size)
        await self._cache_normal_size(number, original, entry)
        if held:
            self._hold(original, entry)
            self._held_at_retr(number, entry)
        return out

    async def _cache_normal_size(self, number: int, original: Spooled,
                                 entry: CachedVerdict) -> None:
        """Later sessions list the normal form: render it once to learn its size."""
        normal = self._spool_file(number, ".normal")
        try:
            size = await self._service.render_to(original.path, entry, normal)
        except JobFailed:
            return  # not cached: the next listing judges it again
        finally:
            normal.unlink(missing_ok=True)
        kept = replace(entry, size=size,
                       quarantine_id=entry.quarantine_id if entry.action == "quarantine" else "")
        await self._service.cache.store(self._keys[number], kept)

    def _held(self, number: int, original: Spooled, entry: CachedVerdict, size: int) -> Path:
        """Hold the original; our notice padded to ``size`` is the client's copy."""
        out = self._spool_file(number, ".sized")
        write_private(out, padded_notice(entry.quarantine_id, entry.scanned_at, size))
        self._hold(original, entry)
        self._held_at_retr(number, entry)
        return out

    def _held_at_retr(self, number: int, entry: CachedVerdict) -> None:
        """Message ``number``, deferred, was held when judged at RETR: the client got our
        notice under the message's own UIDL (released.py records it for a later release)."""
