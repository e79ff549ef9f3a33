"""One session's view of the mailbox when scanning is on: sizes and bodies as the client sees them.

Message numbers are fixed for a POP3 session (RFC 1939 section 5), so the upstream's UIDL and
LIST are read once; DELE/RSET are tracked here to answer STAT and LIST like the upstream would.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from popproxy.pop3 import replies
from popproxy.pop3.events import BodyData, Command, EndOfBody, StatusLine
from popproxy.pop3.framing import Stuffer, Unstuffer, stuff_body
from popproxy.proxy.scanning import ScanService, held_id, unscanned_prefix
from popproxy.proxy.upstream import UpstreamConnection, UpstreamError
from popproxy.proxy.verdict_cache import CachedVerdict, cache_key

if TYPE_CHECKING:
    from popproxy.proxy.session import Session

log = logging.getLogger("popproxy.scan")

NO_SUCH_MESSAGE = replies.err("no such message")
# A rendered message goes to the client in slices of this size, waiting whenever the client's
# socket buffer is full, so the proxy never queues a whole second copy of it for the socket.
RENDERED_WRITE_SLICE = 256 * 1024
# A tagged message is streamed once its header block is read; a header block longer than this
# (hostile: real ones are a few KiB) makes it rendered whole instead.
MAX_STREAMED_HEADER = 1024 * 1024


class MailboxView:
    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_entries", "_generation", "_s", "_service", "_sizes", "_uidls", "_upstream_name",
        "deleted"
    )

    def __init__(self, session: Session, service: ScanService, upstream_name: str) -> None:
        self._s = session
        self._service = service
        self._upstream_name = upstream_name
        self._uidls: dict[int, bytes] | None = None
        self._sizes: dict[int, int] = {}
        self._entries: dict[int, CachedVerdict] = {}
        self.deleted: set[int] = set()
        self._generation: str | None = None  # computed once per session

    @property
    def _up(self) -> UpstreamConnection:
        assert self._s.upstream is not None
        return self._s.upstream

    # ------------------------------------------------------------ upstream listings
    async def _multiline(self, cmd: Command) -> tuple[StatusLine, bytes]:
        self._up.send(cmd)
        status = await self._up.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("upstream closed the connection", "closed")
        body, unstuffer = bytearray(), Unstuffer()
        while status.multiline:
            event = await self._up.next_event()
            if isinstance(event, EndOfBody):
                break
            if not isinstance(event, BodyData):
                raise UpstreamError("upstream closed mid-response", "closed")
            body += unstuffer.feed(event.data)
        return status, bytes(body)

    async def _load(self) -> dict[int, bytes]:
        if self._uidls is None:
            uidls = await self._listing("UIDL")
            self._sizes = {n: int(v) for n, v in (await self._listing("LIST")).items()}
            self._uidls = uidls
        return self._uidls

    async def _listing(self, verb: str) -> dict[int, bytes]:
        """``n value`` lines of the upstream's UIDL or LIST (RFC 1939 sections 5 and 7)."""
        status, body = await self._multiline(Command(verb))
        if not status.ok:
            raise UpstreamError(f"upstream refused {verb}", "protocol")
        result: dict[int, bytes] = {}
        for line in body.split(b"\r\n"):
            number, _, value = line.partition(b" ")
            if number.isdigit() and value:
                result[int(number)] = value.strip()
        return result

    # ------------------------------------------------------------ verdicts
    async def entry(self, number: int) -> CachedVerdict | None:
        """The verdict for message ``number`` (scanning it now if it has none yet)."""
        uidls = await self._load()
        if number not in uidls or number in self.deleted:
            return None
        if number in self._entries:
            return self._entries[number]
        key = cache_key(self._upstream_name, self._s.user or "", uidls[number])
        # This instance's cache, then (with Redis) the one all instances share: a client whose
        # sessions alternate between instances sees the sizes it saw before.
        cached = await self._service.cache.lookup(key, await self._current_generation())
        if cached is None:
            cached = await self._scan(number)
            await self._service.cache.store(key, cached)  # a transient verdict is not kept
        if cached.action == "quarantine" and self._service.quarantine.released(
            cached.quarantine_id
        ):
            cached = CachedVerdict("pass", cached.score, cached.reasons, self._sizes[number],
                                   cached.scanned_at, cached.generation, cached.quarantine_id)
        self._entries[number] = cached
        return cached

    async def _current_generation(self) -> str:
        # Once per session: feeds changing mid-session must not change sizes already shown.
        if self._generation is None:
            self._generation = await self._service.generation()
        return self._generation

    async def _scan(self, number: int) -> CachedVerdict:
        service, size = self._service, self._sizes[number]
        now, generation = service.now(), await self._current_generation()
        if size > service.policy.max_message_bytes:
            # Never held: too large to scan within our memory bound.
            reason = f"unscanned: {size} octets over the {service.policy.max_message_bytes} cap"
            return self._unscanned_entry(size, reason, now, generation)
        original = await self.fetch(number)
        verdict = await service.judge(original)
        action = service.final_action(verdict)
        self._count(verdict.action, action)
        entry = CachedVerdict(action, verdict.score, verdict.reasons, size, now, generation,
                              held_id(original) if action == "quarantine" else "",
                              tuple(s.name for s in verdict.signals),
                              transient=verdict.cause in ("error", "time-budget"))
        if action == "quarantine":
            service.hold(original, entry, self._s.user or "")
        if action != "pass":
            entry = replace(entry, size=len(service.render(original, entry)))
        self._s.audit("verdict", message=number, action=action, score=round(verdict.score, 2),
                      reasons=list(verdict.reasons[:5]), quarantine_id=entry.quarantine_id)
        return entry

    def _unscanned_entry(self, size: int, reason: str, now: float,
                         generation: str) -> CachedVerdict:
        entry = CachedVerdict("unscanned", 0.0, (reason,), size, now, generation)
        self._count("unscanned", "unscanned")
        return replace(entry, size=size + len(unscanned_prefix(entry)))

    def _count(self, verdict: str, action: str) -> None:
        label = "unscanned" if verdict == "unscanned" else (
            "clean" if action == "pass" else "flagged")
        self._s.settings.observer.metrics.messages_scanned.labels(label, action).inc()

    async def fetch(self, number: int) -> bytes:
        """The original message from the upstream, dot-unstuffed."""
        status, body = await self._multiline(Command("RETR", (str(number).encode(),)))
        if not status.ok:
            raise UpstreamError("upstream refused RETR of a listed message", "protocol")
        return body

    # ------------------------------------------------------------ commands
    async def stat(self) -> bytes:
        uidls = await self._load()
        live = [n for n in sorted(uidls) if n not in self.deleted]
        total = 0
        for number in live:
            entry = await self.entry(number)
            assert entry is not None
            total += entry.size
        return replies.ok(f"{len(live)} {total}")

    async def list(self, number: int | None) -> bytes:
        if number is not None:
            entry = await self.entry(number)
            return NO_SUCH_MESSAGE if entry is None else replies.ok(f"{number} {entry.size}")
        uidls = await self._load()
        lines = []
        for n in sorted(uidls):
            entry = await self.entry(n)
            if entry is not None:
                lines.append(f"{n} {entry.size}".encode())
        return replies.multiline(replies.ok(f"{len(lines)} messages"), lines)

    async def deliver(self, number: int, top_lines: int | None) -> None:
        """RETR (``top_lines`` None) or TOP: as judged, with sizes matching LIST."""
        entry = await self.entry(number)
        if entry is None:
            self._s.write(NO_SUCH_MESSAGE)
            return
        args = (str(number).encode(),) + (() if top_lines is None else (str(top_lines).encode(),))
        verb = "RETR" if top_lines is None else "TOP"
        if entry.action == "pass":
            await self._s.relay(Command(verb, args))
        elif entry.action == "unscanned":  # rendered as our header lines + the original
            await self._stream_with_prefix(Command(verb, args), entry)
        elif entry.action == "tag" and top_lines is None:
            await self._stream_tagged(Command(verb, args), number, entry)
        else:
            await self._deliver_rendered(number, top_lines, entry)

    async def _stream_tagged(self, cmd: Command, number: int, entry: CachedVerdict) -> None:
        """RETR of a tagged message without holding it: tagging edits only the header block
        (``tag_message``: new header + the body unchanged), so the header is read and rendered
        alone, then the body is relayed as the upstream sends it (still dot-stuffed)."""
        if not await self._body_follows(cmd):
            return
        unstuffer, seen = Unstuffer(), bytearray()
        while (end := _header_end(seen)) is None:
            event = await self._up.next_event()
            if isinstance(event, EndOfBody):  # no blank line: the message is all header
                self._write_rendered(self._service.render(bytes(seen), entry), number, entry)
                return
            if not isinstance(event, BodyData):
                raise UpstreamError("upstream closed mid-response", "closed")
            seen += unstuffer.feed(event.data)
            if len(seen) > MAX_STREAMED_HEADER:  # hostile header: render the whole message
                seen += await self._rest_unstuffed(unstuffer)
                self._write_rendered(self._service.render(bytes(seen), entry), number, entry)
                return
        head = self._service.render(bytes(seen[:end]), entry)
        # The Stuffer starts at a line start (after the blank line); the upstream's remaining
        # bytes are already stuffed relative to their own line starts.
        self._s.write(replies.ok(f"{entry.size} octets") + Stuffer().feed(head + seen[end:]))
        await self._s.relay_body()

    async def _rest_unstuffed(self, unstuffer: Unstuffer) -> bytes:
        rest = bytearray()
        while not isinstance(event := await self._up.next_event(), EndOfBody):
            if not isinstance(event, BodyData):
                raise UpstreamError("upstream closed mid-response", "closed")
            rest += unstuffer.feed(event.data)
        return bytes(rest)

    def _write_rendered(self, rendered: bytes, number: int, entry: CachedVerdict) -> None:
        if len(rendered) != entry.size:
            log.error("message %d: %d octets now, %d listed", number, len(rendered), entry.size)
        self._s.write(replies.ok(f"{len(rendered)} octets") + stuff_body(rendered))

    async def _deliver_rendered(self, number: int, top_lines: int | None,
                                entry: CachedVerdict) -> None:
        """A tagged, defanged or quarantined message: rendered whole, then sent in slices.

        Memory: at most two copies of the message at a time (the original is dropped once
        rendered) and the socket buffer bounded by waiting for the client (``drain``).
        """
        modified = self._service.render(await self.fetch(number), entry)
        if top_lines is None and len(modified) != entry.size:
            log.error("message %d: %d octets now, %d listed", number, len(modified), entry.size)
        status = replies.ok(f"{len(modified)} octets" if top_lines is None else "")
        wire = stuff_body(modified if top_lines is None else _top(modified, top_lines))
        del modified
        self._s.write(status)
        for start in range(0, len(wire), RENDERED_WRITE_SLICE):
            self._s.write(wire[start:start + RENDERED_WRITE_SLICE])
            await self._s.drain_client()
        self._s.settings.observer.metrics.bytes_relayed.labels("to_client").inc(len(wire))

    async def _body_follows(self, cmd: Command) -> bool:
        """Send ``cmd``; True if a multi-line body follows, else its -ERR went to the client."""
        self._up.send(cmd)
        status = await self._up.next_event()
        if not isinstance(status, StatusLine):
            raise UpstreamError("upstream closed the connection", "closed")
        if not status.multiline:
            self._s.write(status.raw)
        return status.multiline

    async def _stream_with_prefix(self, cmd: Command, entry: CachedVerdict) -> None:
        """Large unscanned message: our header lines, then the upstream's bytes as they come."""
        if not await self._body_follows(cmd):
            return
        prefix = Stuffer()
        self._s.write(replies.ok(f"{entry.size} octets") + prefix.feed(unscanned_prefix(entry)))
        await self._s.relay_body()


def _header_end(message: bytearray) -> int | None:
    """Where the body starts, as ``split_message`` splits (the first blank line, CRLF or LF
    style), or None while no blank line has been seen."""
    crlf, lf = message.find(b"\r\n\r\n"), message.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf + 4
    return None if lf == -1 else lf + 2


def _top(message: bytes, lines: int) -> bytes:
    """RFC 1939 section 7: the header, the blank line, then ``lines`` lines of the body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        return message
    parts = body.split(b"\r\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the CRLF ending the last line is not a line of its own
    return head + sep + b"".join(line + b"\r\n" for line in parts[:lines])
