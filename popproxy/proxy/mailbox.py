"""One session's view of the mailbox when scanning is on: sizes and bodies as the client sees them.

Message numbers are fixed for a POP3 session (RFC 1939 section 5), so the upstream's UIDL and
LIST are read once; DELE/RSET are tracked here to answer STAT and LIST like the upstream would.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from popproxy.pop3 import replies
from popproxy.pop3.events import Command
from popproxy.proxy import scan_jobs
from popproxy.proxy.delivery import (
    RENDERED_WRITE_SLICE,
    HeadRewrite,
    renamed_head,
    send_file,
    stream_with_header,
    unscanned_head,
)
from popproxy.proxy.mailbox_base import MailboxState
from popproxy.proxy.relay import relay
from popproxy.proxy.scan_pool import JobFailed
from popproxy.proxy.spool import Spooled, cut_to_header, read_header, write_private
from popproxy.proxy.upstream import (
    read_listings,
)
from popproxy.proxy.verdict_record import CachedVerdict, listing_keys

__all__ = ["RENDERED_WRITE_SLICE", "MailboxView"]

log = logging.getLogger("popproxy.scan")

NO_SUCH_MESSAGE = replies.err("no such message")
TOO_LARGE = "too-large"  # marks a verdict of a message over max_message_bytes (head judged)
STREAMED_TAG = "streamed-tag"  # marks a tag whose header block was rendered alone
# A tagged message is streamed once its header block is read; a header block longer than this
# (hostile: real ones are a few KiB) makes it rendered whole instead.
MAX_STREAMED_HEADER = 1024 * 1024


class MailboxView(MailboxState):
    """Answers STAT, LIST, RETR and TOP from scan verdicts, over the session's upstream
    connection; replies go to ``client``.  Knows nothing of the session itself."""

    __slots__ = ()  # (MailboxState's)

    # ------------------------------------------------------------ upstream listings
    async def _load(self) -> dict[int, bytes]:
        if self._numbers is None:
            uidls, sizes = await read_listings(self._up)
            self._sizes = {n: int(v) for n, v in sizes.items()}
            self._numbers = uidls
            self._keys = listing_keys(self._upstream_name, self._user, uidls, self._sizes)
            # Verdicts live as long as their message (scan.evidence_ttl bounds the rest).
            if gone := self._service.cache.forget_unlisted(self._box, set(self._keys.values())):
                await self._service.cache.forget_shared(gone)
            self._numbers = self._numbered(uidls)  # released.py's own messages after these
        return self._numbers

    # ------------------------------------------------------------ verdicts
    async def entry(self, number: int) -> CachedVerdict | None:
        """The verdict for message ``number`` (scanning it now if it has none yet)."""
        uidls = await self._load()
        if number not in uidls or number in self.deleted:
            return None
        if number in self._entries:
            return self._entries[number]
        key, generation = self._keys[number], await self._current_generation()
        # This instance's cache, then (with Redis) the one all instances share: a client whose
        # sessions alternate between instances sees the sizes it saw before.
        cached = await self._service.cache.lookup(key, generation)
        if cached is not None and cached.generation != generation:
            # Older feeds/weights/model/thresholds: re-scored, downloaded only if its action
            # changes.  The session's generation is fixed, so LIST == RETR within it.
            cached = await self._service.carry_over(key, cached, generation,
                                                    TOO_LARGE in cached.signals)
        if cached is None:
            cached = await self._judge_new(number, key)
        return self._keep(number, cached)

    def _keep(self, number: int, cached: CachedVerdict) -> CachedVerdict:
        """``cached`` as this session uses it (a released quarantine is a pass), kept."""
        if cached.action == "quarantine" and self._service.quarantine.released(
            cached.quarantine_id
        ):
            cached = replace(cached, action="pass", size=self._sizes[number], signals=(),
                             evidence=None, released=True)
        self._entries[number] = cached
        return cached

    async def _judge_new(self, number: int, key: str) -> CachedVerdict:
        """Download and judge a message with no usable verdict (listing_budget may defer)."""
        cached = await self._scan(number)
        self._metrics.scan_judged.labels("downloaded").inc()
        await self._service.cache.store(key, cached)  # a transient verdict is not kept
        return cached

    async def _scan(self, number: int) -> CachedVerdict:
        """Judge message ``number``: spooled to disk as it is read (the proxy never holds it
        whole), judged and rendered by a worker from that file."""
        service, size = self._service, self._sizes[number]
        now, generation = service.now(), await self._current_generation()
        if size > service.policy.max_message_bytes:
            return await self._too_large_entry(number, size, now, generation)
        original = await self._spool_original(number)
        self._metrics.scan_judge_bytes.inc(size)  # read whole to judge it
        verdict, kept = await service.judge(original.path)
        action = service.final_action(verdict)
        self._count(verdict.action, action)
        entry = CachedVerdict(action, verdict.score, verdict.reasons, size, now, generation,
                              original.digest if action == "quarantine" else "",
                              tuple(s.name for s in verdict.signals),
                              transient=service.transient(verdict), evidence=kept,
                              mailbox=self._box)
        if action == "tag":
            entry = await self._tag_header_at_listing(number, original, entry)
        elif action != "pass":
            entry = await self._render_at_listing(number, original, entry)
        original.path.unlink(missing_ok=True)  # moved into the quarantine when held
        self._audit("verdict", message=number, action=entry.action,
                      score=round(verdict.score, 2), reasons=list(entry.reasons[:5]),
                      quarantine_id=entry.quarantine_id)
        return entry

    async def _tag_header_at_listing(self, number: int, original: Spooled,
                                     entry: CachedVerdict) -> CachedVerdict:
        """A tag changes the header block only: render that alone (spooled) and stream the
        body at RETR, as for messages over the cap (no whole render per session, no copy in
        spool or worker memory).  A header block over MAX_STREAMED_HEADER is rendered whole."""
        head = read_header(original.path, MAX_STREAMED_HEADER)
        if head is None:
            return await self._render_at_listing(number, original, entry)
        header = self._spool_file(number, ".hdr")
        write_private(header, head)
        try:
            rendered = await self._service.render_to(header, entry,
                                                     self._spool_file(number, ".head"))
        except JobFailed:
            # Rendered whole instead: if that fails too, the message is held behind our notice.
            return await self._render_at_listing(number, original, entry)
        finally:
            header.unlink(missing_ok=True)
        self._spool.keep(self._spool_file(number, ".head"))  # else made again at RETR
        return replace(entry, size=original.length - len(head) + rendered,
                       signals=(STREAMED_TAG, *entry.signals))

    async def _render_at_listing(self, number: int, original: Spooled,
                                 entry: CachedVerdict) -> CachedVerdict:
        """Render into the spool now: its size is what LIST reports, and RETR sends the file.

        If the action cannot be rendered in time, the message is quarantined behind our own
        notice: delivering the original instead would hand out the live links it was judged
        to have.
        """
        out = self._spool_file(number)
        try:
            entry = replace(entry, size=await self._service.render_to(original.path, entry, out))
        except JobFailed as exc:
            log.warning("message %d: %s rendering failed (%s): quarantined", number,
                        entry.action, exc.reason)
            entry = replace(entry, action="quarantine",
                            reasons=(scan_jobs.RENDER_FAILED, *entry.reasons),
                            quarantine_id=original.digest)
            notice = scan_jobs.fallback_notice(entry.quarantine_id, entry.scanned_at)
            write_private(out, notice)
            entry = replace(entry, size=len(notice))
        if entry.action == "quarantine":
            self._hold(original, entry)
        self._spool.keep(out)  # past the session's budget: made again at RETR
        return entry

    async def _too_large_entry(self, number: int, size: int, now: float,
                               generation: str) -> CachedVerdict:
        """A message over the cap is judged on its head (the first ``max_message_bytes``).
        Tagged at least (the scanner adds ``limit-size``): its header is rendered alone and its
        body streamed.  Judged worse than tag, it cannot be defanged without holding it, so it
        is quarantined: spooled to disk whole, then held."""
        service = self._service
        head = await self._spool_original(number, limit=service.policy.max_message_bytes)
        self._metrics.scan_judge_bytes.inc(size)  # read whole, its head kept
        verdict, kept = await service.judge(head.path, truncated=True)
        action = service.final_action(verdict, too_large=True)
        if action == "tag" and read_header(head.path, MAX_STREAMED_HEADER) is None:
            # Streamed delivery needs the header within MAX_STREAMED_HEADER (honest mail's is).
            action = "quarantine"
        self._count(verdict.action, action)
        reasons = verdict.reasons or (f"unscanned: {size} octets over the "
                                      f"{service.policy.max_message_bytes} cap",)
        entry = CachedVerdict(action, verdict.score, reasons, size, now, generation,
                              signals=(TOO_LARGE, *(s.name for s in verdict.signals)),
                              transient=service.transient(verdict), evidence=kept,
                              mailbox=self._box)
        if action == "quarantine":
            whole = await self._spool_original(number, suffix=".whole")
            entry = replace(entry, quarantine_id=whole.digest)
            self._hold(whole, entry)
            entry = replace(entry, size=await self._render_or_notice(number, head.path, entry))
            self._spool.keep(self._spool_file(number))  # past the budget: made again at RETR
        else:
            header = cut_to_header(head.path, MAX_STREAMED_HEADER)
            entry = replace(entry, size=size - header.length
                            + await self._render_header(number, header.path, entry))
            self._spool.keep(self._spool_file(number, ".head"))
        head.path.unlink(missing_ok=True)
        self._audit("unscanned", message=number, **service.too_large(size, action))
        self._audit("verdict", message=number, action=action, score=round(verdict.score, 2),
                      reasons=list(entry.reasons[:5]), quarantine_id=entry.quarantine_id)
        return entry

    async def _header_of(self, number: int) -> Spooled:
        """The header block (TOP n 0): the bytes cut from the head a capped RETR gives."""
        top = await self._spool_original(number, self._service.policy.max_message_bytes,
                                         ".top", "TOP")
        return cut_to_header(top.path, MAX_STREAMED_HEADER)

    # ------------------------------------------------------------ commands
    async def _live_entries(self) -> list[tuple[int, CachedVerdict]]:
        """(number, verdict) of every message not deleted, in number order."""
        found = [(n, await self.entry(n)) for n in sorted(await self._load())]
        self._service.cache.flush()  # the listing's carried-over verdicts, in one append
        return [(n, entry) for n, entry in found if entry is not None]

    async def stat(self) -> bytes:
        return stat_reply(await self._live_entries())

    async def list(self, number: int | None) -> bytes:
        if number is not None:
            entry = await self.entry(number)
            return NO_SUCH_MESSAGE if entry is None else replies.ok(f"{number} {entry.size}")
        lines = [f"{n} {entry.size}".encode() for n, entry in await self._live_entries()]
        return replies.multiline(replies.ok(f"{len(lines)} messages"), lines)

    async def deliver(self, number: int, top_lines: int | None) -> None:
        """RETR (``top_lines`` None) or TOP: as judged, with sizes matching LIST."""
        entry = await self.entry(number)
        if entry is None:
            self._client.write(NO_SUCH_MESSAGE)
            return
        args = (str(number).encode(),) + (() if top_lines is None else (str(top_lines).encode(),))
        cmd = Command("RETR" if top_lines is None else "TOP", args)
        if entry.action == "pass" and not entry.released:
            self._count_relayed((await relay(self._up, self._client, cmd))[1])
        elif entry.action == "pass":  # released from quarantine: the original, our header fix
            await self._stream_with_header(cmd, entry, top_lines, renamed_head)
        elif entry.action == "unscanned":  # cached by an older version: verdict lines in front
            await self._stream_with_header(cmd, entry, top_lines, unscanned_head(entry))
        elif entry.action == "tag" and (TOO_LARGE in entry.signals
                                        or STREAMED_TAG in entry.signals):
            await self._stream_tagged(cmd, number, entry, top_lines)
        else:
            await self._deliver_rendered(number, top_lines, entry)

    async def _deliver_rendered(self, number: int, top_lines: int | None,
                                entry: CachedVerdict) -> None:
        """A tagged, defanged or quarantined message, sent from its spool file in slices: kept
        from listing time, or rendered now (an earlier session's verdict, or past the spool
        budget).  If that fails, our notice padded to the size told; the original is held."""
        path = self._spool_file(number)
        if not path.exists() and entry.reasons[:1] == (scan_jobs.RENDER_FAILED,):
            # Our own notice, from our own data: no need for the original or a worker.
            write_private(path, scan_jobs.fallback_notice(entry.quarantine_id,
                                                           entry.scanned_at))
        if not path.exists():
            # An over-cap message is rendered from its head, as it was at listing time.
            cap = self._service.policy.max_message_bytes if TOO_LARGE in entry.signals else None
            original = await self._spool_original(number, cap)
            try:
                size = await self._service.render_to(original.path, entry, path)
            except JobFailed as exc:
                log.warning("message %d: %s rendering failed at delivery (%s): quarantined",
                            number, entry.action, exc.reason)
                size = self._hold_and_notice(original, entry, path)
            original.path.unlink(missing_ok=True)
            if size != entry.size:
                log.error("message %d: %d octets now, %d listed", number, size, entry.size)
        self._count_relayed(await send_file(self._client, (path,), top_lines))
        self._spool.keep(path)  # for a second RETR or TOP, if the budget allows

    async def _stream_tagged(self, cmd: Command, number: int, entry: CachedVerdict,
                             top_lines: int | None) -> None:
        """Our rendered header block (spooled), then the upstream's body as it comes."""
        head_file = self._spool_file(number, ".head")
        if not head_file.exists():
            header = await self._header_of(number)
            await self._render_header(number, header.path, entry)
            header.path.unlink(missing_ok=True)
        rendered = head_file.read_bytes()  # a header block: at most max_message_bytes
        self._spool.keep(head_file)
        await self._stream_with_header(cmd, entry, top_lines, lambda head: rendered)

    async def _stream_with_header(self, cmd: Command, entry: CachedVerdict,
                                  top_lines: int | None, new_head: HeadRewrite) -> None:
        relayed = await stream_with_header(self._up, self._client, cmd, entry.size, top_lines,
                                           new_head, MAX_STREAMED_HEADER)
        self._count_relayed(relayed)


def stat_reply(listed: list[tuple[int, CachedVerdict]]) -> bytes:
    """STAT's answer for the live messages (RFC 1939 section 5: count and octets as the
    client's copies have them): replies.ok's line, made at once."""
    return b"+OK %d %d\r\n" % (len(listed), sum([entry.size for _, entry in listed]))
