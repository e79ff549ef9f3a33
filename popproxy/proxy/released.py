"""Quarantine releases that reach UIDL-tracking clients (issue 19 item 9, docs/scanning.md).

mpop, fetchmail and Thunderbird remember the UIDLs they fetched (RFC 1939 section 7) and never
fetch one again.  So:

* A held message's notice is listed under a UIDL of its own (:func:`notice_uidl`): the
  original's plus ``NOTICE_SUFFIX``.  After a release the message is listed under its own
  UIDL again, which the client has never seen: it fetches the original once (``keep``).
* A client that deleted the notice (``no keep``) deleted the original upstream with it.  The
  session records that at the QUIT that commits the deletion (RFC 1939 section 6: UPDATE
  state); after a release the proxy lists the held original from the quarantine as an extra
  message after the upstream's (:func:`released_uidl`), until the client deletes it.  Message
  numbers stay fixed for the session (RFC 1939 section 5): the extra messages are chosen at
  the first listing and numbered after the upstream's last.  Nothing about them reaches the
  upstream: DELE of one is answered here, RETR/TOP are served from the quarantine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from popproxy.metrics import Metrics
from popproxy.pop3 import replies
from popproxy.pop3.events import Command
from popproxy.pop3.replies import Code
from popproxy.proxy.delivery import renamed_head, send_file
from popproxy.proxy.listing_budget import BudgetedMailbox
from popproxy.proxy.mailbox import MAX_STREAMED_HEADER, NO_SUCH_MESSAGE
from popproxy.proxy.relay import ClientSink, relay
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.settings import AuditFn
from popproxy.proxy.spool import header_end
from popproxy.proxy.upstream import UpstreamConnection
from popproxy.proxy.verdict_cache import CachedVerdict
from popproxy.quarantine import HeldMessage

log = logging.getLogger("popproxy.scan")

# RFC 1939 section 7 (UIDL): a unique-id is 1 to 70 characters in 0x21 to 0x7E.
MAX_UIDL = 70
# Appended to a held message's UIDL for its notice.  Long enough that no real server's UIDL
# ends with it by chance; a UIDL too long to take it is replaced by a digest instead.
NOTICE_SUFFIX = b".popproxy-held"
NOTICE_DIGEST_PREFIX = b"popproxy-held-"
# The UIDL of a released original served from the quarantine: its id is a digest of its bytes.
RELEASED_PREFIX = b"popproxy-released-"
# A released original is copied into the session's spool in slices of this size (never whole
# in memory: it may be a message over scan.max_message_bytes).
COPY_SLICE = 1024 * 1024


def notice_uidl(uidl: bytes) -> bytes:
    """The UIDL a held message's notice is listed under: never the original's."""
    if len(uidl) + len(NOTICE_SUFFIX) <= MAX_UIDL:
        return uidl + NOTICE_SUFFIX
    return NOTICE_DIGEST_PREFIX + hashlib.sha256(uidl).hexdigest()[:40].encode()


def released_uidl(message_id: str) -> bytes:
    return RELEASED_PREFIX + message_id.encode()


@dataclass(frozen=True)
class Extra:
    """A released original listed by the proxy: its quarantine file and the size it is sent at."""

    held: HeldMessage
    original: Path
    head_length: int  # the original's header block, replaced by renamed_head() when sent
    size: int


def extra_of(held: HeldMessage, original: Path) -> Extra:
    """The size a released original is sent at: its header renamed as in place (delivery)."""
    with original.open("rb") as handle:
        start = bytearray(handle.read(MAX_STREAMED_HEADER + 4))
    end = header_end(start) or min(len(start), MAX_STREAMED_HEADER)
    head = renamed_head(bytes(start[:end]))
    return Extra(held, original, end, original.stat().st_size - end + len(head))


class ReleasingMailbox(BudgetedMailbox):
    """A ``BudgetedMailbox`` that lists notices under their own UIDL and serves releases whose
    upstream copy the client deleted."""

    __slots__ = ("_extras", "_held_ids")

    def __init__(self, upstream: UpstreamConnection, client: ClientSink, service: ScanService,
                 upstream_name: str, user: str, audit: AuditFn, metrics: Metrics) -> None:
        super().__init__(upstream, client, service, upstream_name, user, audit, metrics)
        self._extras: dict[int, Extra] = {}
        self._held_ids: dict[int, str] = {}  # deferred messages held at RETR: their id

    def _numbered(self, uidls: dict[int, bytes]) -> dict[int, bytes]:
        """The upstream's UIDLs and, numbered after them, the released originals (extras)."""
        store = self._service.quarantine
        pending = store.pending(self._box)
        if not pending:  # (most logins: no max(), no enumerate)
            return uidls
        number = max(uidls, default=0)
        for held in pending:
            try:
                extra = extra_of(held, store.directory / f"{held.id}.eml")
            except OSError as exc:  # purged since pending() found it: not listed, not fatal
                log.warning("released message %s not listed: %s", held.id, exc.strerror)
                continue
            number += 1
            self._extras[number] = extra
        return uidls | {n: released_uidl(x.held.id) for n, x in self._extras.items()}

    async def entry(self, number: int) -> CachedVerdict | None:
        await self._load()
        extra = self._extras.get(number)
        if extra is None:
            return await super().entry(number)
        if number in self.deleted:
            return None
        held = extra.held
        return CachedVerdict("pass", held.score, held.reasons, extra.size, held.held_at, "",
                             released=True, mailbox=self._box)

    async def uidl(self, number: int | None) -> bytes:
        """UIDL, with the notices' own UIDLs and the extras' (RFC 1939 section 7)."""
        uidls = await self._load()
        if number is not None:
            entry = await self.entry(number)
            if entry is None:
                return NO_SUCH_MESSAGE
            # Built as bytes: a UIDL is sent as the upstream gave it (0x21-0x7E, RFC 1939 s7).
            return b"+OK %d %s\r\n" % (number, self._uidl_of(uidls[number], entry))
        await self._first_listing()
        lines = [f"{n} ".encode() + self._uidl_of(uidls[n], entry)
                 for n, entry in await self._live_entries()]
        return replies.multiline(replies.ok(f"{len(lines)} messages"), lines)

    @staticmethod
    def _uidl_of(uidl: bytes, entry: CachedVerdict) -> bytes:
        return notice_uidl(uidl) if entry.action == "quarantine" else uidl

    async def deliver(self, number: int, top_lines: int | None) -> None:
        extra = self._extras.get(number)
        if extra is None or number in self.deleted:
            await super().deliver(number, top_lines)
            return
        path = self._spool_file(number, ".released")
        if not path.exists() and not self._spool_released(extra, path):
            # Purged from the quarantine since it was listed: gone for good (RFC 3206 s4).
            self._client.write(replies.err(f"message {number} is no longer available",
                                           Code.SYS_PERM))
            return
        self._count_relayed(await send_file(self._client, (path,), top_lines))

    @staticmethod
    def _spool_released(extra: Extra, path: Path) -> bool:
        """The session's copy of a released original at ``path``; False if the quarantine no
        longer has it.  Written under another name and renamed when whole: a copy cut short
        (an error mid-copy, a full disk) is never served by a later RETR."""
        partial = path.with_name(path.name + ".part")  # (the spool goes with the session)
        try:
            with extra.original.open("rb") as source:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds mail
                with os.fdopen(fd, "wb") as out:
                    out.write(renamed_head(source.read(extra.head_length)))
                    shutil.copyfileobj(source, out, COPY_SLICE)
        except FileNotFoundError:
            log.warning("released message %s gone from the quarantine", extra.held.id)
            return False
        os.replace(partial, path)
        return True

    async def dele(self, number: int) -> None:
        """DELE: an extra message is marked here, never sent upstream; others are relayed."""
        await self._load()
        if number in self._extras:
            if number in self.deleted:
                self._client.write(replies.err(f"message {number} already deleted"))
            else:
                self.deleted.add(number)
                self._client.write(replies.ok(f"message {number} deleted"))
            return
        # Its verdict (cached, normally): deleting a held message's notice deletes the original
        # upstream, which committed() records for the release.
        await self.entry(number)
        status, _ = await relay(self._up, self._client, Command("DELE", (str(number).encode(),)))
        if status.ok:
            self.deleted.add(number)

    def _held_at_retr(self, number: int, entry: CachedVerdict) -> None:
        self._held_ids[number] = entry.quarantine_id

    def committed(self) -> None:
        """The upstream said +OK to QUIT: the deletions are done (RFC 1939 section 6)."""
        if not self.deleted:  # (most sessions delete nothing: no sets to build)
            return
        delivered = {self._extras[n].held.id for n in self.deleted if n in self._extras}
        notices = {self._held_ids[n] for n in self.deleted if n in self._held_ids}
        for number in self.deleted - set(self._extras) - set(self._held_ids):
            entry = self._entries.get(number)
            if entry is not None and entry.action == "quarantine" and entry.quarantine_id:
                notices.add(entry.quarantine_id)
        store = self._service.quarantine
        if delivered:
            store.delivered(self._box, delivered)
            self._audit("quarantine_delivered", ids=sorted(delivered))
        if notices:
            store.notices_deleted(self._box, notices)

