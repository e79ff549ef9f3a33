"""Scanning in the relay: judge each message once, keep POP3 sizes consistent (RFC 1939).

Design (docs/scanning.md): before the proxy first reports a message's size (STAT, LIST) or
delivers it (RETR, TOP), it makes sure the message has a cached verdict: it fetches the
original from the upstream, scans it, and remembers the action and the exact size of what the
client will receive.  STAT/LIST report those sizes; RETR/TOP re-fetch the original and apply
the same action again (actions are deterministic), so LIST == RETR octets, UIDL is relayed
untouched, and TOP is cut from the same (possibly modified) message.  Clean messages are relayed
byte for byte with no second scan.  Messages over the size cap are never held in memory: in
fail-open mode they are streamed with a verdict header in front.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from popproxy.policy.schema import Scan
from popproxy.proxy.observe import Observer
from popproxy.proxy.verdict_cache import CACHE_FILE, CachedVerdict, RedisVerdicts, VerdictCache
from popproxy.quarantine import HeldMessage, QuarantineStore
from popproxy.scan import (
    RENDER_VERSION,
    HostFeed,
    ScanConfig,
    Scanner,
    Thresholds,
    Verdict,
    apply_action,
)
from popproxy.scan.actions import quarantine_notice

log = logging.getLogger("popproxy.scan")

SCAN_THREADS = 2  # scans run off the event loop; two keep one core free for relaying
# Settings that do not change what a client receives: instances with their own Redis address
# or quarantine directory still judge alike, so they can share verdicts.
NOT_IN_GENERATION = frozenset({"redis_url", "verdict_ttl", "quarantine_dir"})


class ScanService:
    """Shared by all sessions: the scanner, its thread pool, the cache and the quarantine."""

    def __init__(self, policy: Scan, state_dir: Path, observer: Observer,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.config = ScanConfig(
            thresholds=Thresholds(policy.thresholds.tag, policy.thresholds.defang,
                                  policy.thresholds.quarantine),
            max_message_bytes=policy.max_message_bytes, time_budget_seconds=policy.time_budget,
            feed_paths=policy.feeds, subject_prefix=policy.subject_prefix,
            notice_from=policy.notice_from,
        )
        self.scanner = Scanner(self.config)
        shared = RedisVerdicts(policy.redis_url, policy.verdict_ttl) if policy.redis_url else None
        self.cache = VerdictCache(state_dir / CACHE_FILE, shared, self._count_cache,
                                  ttl=policy.verdict_ttl, wall_clock=clock)
        self.quarantine = QuarantineStore(policy.quarantine_dir or state_dir / "quarantine")
        self._observer = observer
        self._clock = clock
        self._pool = ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="popproxy-scan")
        self._feed_versions: list[tuple[str, int | None]] = []
        settings = policy.model_dump(mode="json", exclude=set(NOT_IN_GENERATION))
        # The action code's output version too: a release whose tag/defang renders different
        # bytes must not reuse sizes cached by the one before (LIST would differ from RETR).
        settings["render_version"] = RENDER_VERSION
        self._settings_hash = hashlib.sha256(
            json.dumps(settings, sort_keys=True).encode()
        ).hexdigest()[:12]

    async def generation(self) -> str:
        """Changes when the settings or a feed file change: cached verdicts are then redone.

        Feed files are re-read in the scan pool: parsing a large feed must not stall the
        event loop (and with it every other session).  A feed counts by its content, not its
        mtime, so instances on hosts that fetched the same feed at different times share
        verdicts; a feed file that could not be loaded counts by its mtime (or as missing).
        """
        versions: list[tuple[str, int | None]] = []
        for feed in self.scanner.feeds:
            try:
                versions.append((str(feed.path), os.stat(feed.path).st_mtime_ns))
            except OSError:
                versions.append((str(feed.path), None))
        if versions != self._feed_versions:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, self._refresh_feeds)
            self._feed_versions = versions
        identities = [_feed_identity(feed, mtime)
                      for feed, (_, mtime) in zip(self.scanner.feeds, versions, strict=True)]
        digest = hashlib.sha256(",".join(identities).encode()).hexdigest()[:8]
        return self._settings_hash + digest

    def _refresh_feeds(self) -> None:
        for feed in self.scanner.feeds:
            feed.refresh()

    async def judge(self, original: bytes) -> Verdict:
        """Scan in the pool; an error or a scan past twice the budget is "unscanned"."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.policy.time_budget * 2):
                verdict = await loop.run_in_executor(self._pool, self.scanner.scan, original)
        except TimeoutError:
            # Scanner checks its budget between steps; this bounds a step that never returns.
            verdict = Verdict.unscanned("time-budget", "scan did not finish in time")
        except Exception as exc:  # a scanner bug must not end the user's session
            log.exception("scanner failed")
            verdict = Verdict.unscanned("error", f"scanner error {exc.__class__.__name__}")
        metrics = self._observer.metrics
        metrics.scan_duration.observe(time.monotonic() - started)
        for signal in verdict.signals:
            metrics.signals_hit.labels(signal.name).inc()
        return verdict

    def final_action(self, verdict: Verdict) -> str:
        """The policy's fail mode turns "unscanned" into tag-unscanned or quarantine."""
        if verdict.action == "unscanned" and self.policy.fail_mode == "closed":
            return "quarantine"
        return verdict.action

    def render(self, original: bytes, entry: CachedVerdict) -> bytes:
        """What the client gets for a non-pass entry; the same bytes every time.

        If the action itself fails on this message (hostile MIME), the message is delivered
        with the verdict headers in front instead: deterministic, and it cannot fail.
        """
        try:
            return self._render(original, entry)
        except Exception:
            log.exception("action %s failed; using the fallback", entry.action)
            if entry.action == "quarantine":  # never let a failed notice release the original
                return fallback_notice(entry)
            return unscanned_prefix(entry, entry.action) + original

    def _render(self, original: bytes, entry: CachedVerdict) -> bytes:
        verdict = Verdict(action=entry.action, score=entry.score,  # type: ignore[arg-type]
                          reasons=entry.reasons)
        if entry.action == "quarantine":
            return quarantine_notice(original, verdict, quarantine_id=entry.quarantine_id,
                                     notice_from=self.config.notice_from, now=entry.scanned_at)
        if entry.action == "unscanned":
            return unscanned_prefix(entry) + original
        return apply_action(original, verdict, self.config, clock=lambda: entry.scanned_at)

    def hold(self, original: bytes, entry: CachedVerdict, user: str) -> None:
        self.quarantine.hold(HeldMessage(entry.quarantine_id, user, entry.scanned_at,
                                         entry.score, entry.reasons, len(original)), original)

    def now(self) -> float:
        return self._clock()

    def _count_cache(self, result: str) -> None:
        self._observer.metrics.verdict_cache.labels(result).inc()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """``close``, and the shared cache's Redis connections (at shutdown)."""
        self.close()
        await self.cache.close()


def _feed_identity(feed: HostFeed, mtime_ns: int | None) -> str:
    """The loaded content's digest; a file that could not be loaded as it is now counts by its
    mtime (judged again once it loads), a missing one as missing."""
    if mtime_ns == feed.mtime_ns:
        return feed.digest
    return f"{feed.path}:{'missing' if mtime_ns is None else mtime_ns}"


def unscanned_prefix(entry: CachedVerdict, verdict: str = "unscanned") -> bytes:
    """Header lines put in front of a message delivered without a verdict (fail-open).

    Prepending keeps the original untouched after them, so even a message too large to hold
    can be streamed; RFC 5322 section 3.6 allows header fields in any order.
    """
    reason = (entry.reasons[0] if entry.reasons else "unscanned").replace("\r", " ")
    reason = reason.replace("\n", " ")[:200]
    return (b"X-Popproxy-Verdict: " + verdict.encode() + b"\r\nX-Popproxy-Reasons: "
            + reason.encode("ascii", "replace") + b"\r\n")


def fallback_notice(entry: CachedVerdict) -> bytes:
    """A minimal quarantine notice built from our own data only (it cannot fail)."""
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(entry.scanned_at))
    return (b"From: popproxy <postmaster@localhost>\r\nSubject: [QUARANTINED] a message was held"
            b"\r\nDate: " + when.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"A message was held by the mail security proxy.\r\nQuarantine id: "
            + entry.quarantine_id.encode("ascii", "replace") + b"\r\n")


def held_id(original: bytes) -> str:
    return hashlib.sha256(original).hexdigest()[:16]



