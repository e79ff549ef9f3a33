"""A session's mailbox state and the steps both listing and delivery use (popproxy.proxy.mailbox).

Split from mailbox.py (the module limit): the state one session keeps (slots: idle memory per
session), its spool, and spooling, rendering and holding a message.  ``MailboxView`` adds the
verdicts and the commands (RFC 1939 section 5: numbers and sizes fixed for the session).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from popproxy.metrics import Metrics
from popproxy.pop3.events import Command
from popproxy.proxy import scan_jobs
from popproxy.proxy.delivery import SessionSpool, spool_body
from popproxy.proxy.relay import ClientSink
from popproxy.proxy.scan_pool import JobFailed
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.settings import AuditFn
from popproxy.proxy.spool import Spooled, write_private
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError, UpstreamFailure
from popproxy.proxy.verdict_record import CachedVerdict, mailbox_key
from popproxy.quarantine import HeldMessage, describe


class MailboxState:
    """What ``MailboxView`` keeps per session, and its spool/render/hold steps."""

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_audit", "_box", "_client", "_entries", "_generation", "_keys", "_metrics",
        "_numbers", "_service", "_sizes", "_spool", "_up", "_upstream_name", "_user", "deleted"
    )

    def __init__(self, upstream: UpstreamConnection, client: ClientSink, service: ScanService,
                 upstream_name: str, user: str, audit: AuditFn, metrics: Metrics) -> None:
        self._up = upstream
        self._client = client
        self._service = service
        self._upstream_name = upstream_name
        self._user = user
        self._box = mailbox_key(upstream_name, user)
        self._audit = audit
        self._metrics = metrics
        self._numbers: dict[int, bytes] | None = None  # number -> UIDL, as the client is listed
        self._sizes: dict[int, int] = {}
        self._keys: dict[int, str] = {}  # cache keys, hashed once per message
        self._entries: dict[int, CachedVerdict] = {}
        self.deleted: set[int] = set()
        self._generation: str | None = None  # computed once per session
        self._spool = SessionSpool(service.spool_dir)  # this session's rendered messages

    async def _current_generation(self) -> str:
        # Once per session: feeds changing mid-session must not change sizes already shown.
        if self._generation is None:
            self._generation = await self._service.generation()
        return self._generation

    def _hold(self, original: Spooled, entry: CachedVerdict) -> None:
        """Move the spooled original into the quarantine."""
        self._service.quarantine.hold_file(
            HeldMessage(entry.quarantine_id, self._user, entry.scanned_at, entry.score,
                        entry.reasons, original.length, upstream=self._upstream_name,
                        **describe(original.path)), original.path)

    async def _spool_original(self, number: int, limit: int | None = None,
                              suffix: str = ".orig", verb: str = "RETR") -> Spooled:
        """RETR (or ``TOP n 0``) into a spool file as it comes, unstuffed, ``limit`` octets kept."""
        path = self._spool_file(number, suffix)
        args = (str(number).encode(),) + ((b"0",) if verb == "TOP" else ())
        if not (await self._up.request(Command(verb, args))).multiline:
            raise UpstreamError(f"upstream refused {verb} of a listed message",
                                UpstreamFailure.PROTOCOL)
        return await spool_body(self._up.body(), path, limit)

    async def _render_or_notice(self, number: int, source: Path, entry: CachedVerdict) -> int:
        """Render into the spool; if that fails, our notice padded to the size told."""
        out = self._spool_file(number)
        try:
            return await self._service.render_to(source, entry, out)
        except JobFailed:
            write_private(out, scan_jobs.sized_notice(entry.quarantine_id, entry.scanned_at,
                                                       entry.size))
            return entry.size

    async def _render_header(self, number: int, header: Path, entry: CachedVerdict) -> int:
        """Render the header block alone into the spool (file ``<n>.head``); its size."""
        out = self._spool_file(number, ".head")
        try:
            return await self._service.render_to(header, entry, out)
        except JobFailed:
            # Our verdict lines and the header renamed by us: the same bytes every time.
            fixed = scan_jobs.unscanned_prefix(entry.reasons, "tag") + \
                scan_jobs.rename_forged_headers(header.read_bytes())
            write_private(out, fixed)
            return len(fixed)

    def _count(self, verdict: str, action: str) -> None:
        label = ("unscanned" if verdict == "unscanned" else
                 "clean" if action == "pass" else "flagged")
        self._metrics.messages_scanned.labels(label, action).inc()

    def _spool_file(self, number: int, suffix: str = "") -> Path:
        return self._spool.file(f"{number}{suffix}")  # removed with the session (close)

    def close(self) -> None:
        """Remove this session's spool (rendered copies are never kept past the session)."""
        self._spool.remove()
        self._service.cache.flush()  # verdicts carried over by RETR/TOP or LIST n

    def _hold_and_notice(self, original: Spooled, entry: CachedVerdict, path: Path) -> int:
        held = replace(entry, quarantine_id=entry.quarantine_id or original.digest,
                       reasons=(scan_jobs.RENDER_FAILED, *entry.reasons))
        if entry.action != "quarantine":  # a quarantined original was held when judged
            self._hold(original, held)
        write_private(path, scan_jobs.sized_notice(held.quarantine_id, entry.scanned_at,
                                                    entry.size))
        return entry.size

    def _count_relayed(self, octets: int) -> None:
        # Added per response, not per chunk: one metric update per RETR keeps the hot loop lean.
        self._metrics.bytes_relayed.labels("to_client").inc(octets)

    def _numbered(self, uidls: dict[int, bytes]) -> dict[int, bytes]:
        """The numbers the client is listed, from the upstream's UIDLs (``_load``, once): a
        hook, not a ``_load`` override, so a listing resumes no extra coroutine (released.py
        numbers messages of its own after these)."""
        return uidls
