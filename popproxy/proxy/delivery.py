"""Moving a message: from the upstream into a session's spool files, and to the client from
those files or from the upstream with its header block replaced.  Functions of an upstream
connection, a ``ClientSink`` and paths only: no session.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from popproxy.pop3 import replies
from popproxy.pop3.events import Command
from popproxy.pop3.framing import Stuffer, Unstuffer
from popproxy.pop3.top import TopCut
from popproxy.proxy import scan_jobs
from popproxy.proxy.relay import ClientSink, relay_body
from popproxy.proxy.spool import Spooled, header_end
from popproxy.proxy.upstream import BodyChunks, UpstreamConnection
from popproxy.proxy.verdict_cache import CachedVerdict

# A rendered message is read from its spool file and sent in slices of this size, waiting
# whenever the client's socket buffer is full: a slow reader costs about one slice of memory,
# never a copy of the message (issue 14: 10 slow readers of a 15 MB message held 140 MB).
RENDERED_WRITE_SLICE = 256 * 1024

HeadRewrite = Callable[[bytes], bytes]


# Renders of flagged messages (and tagged header blocks) a session keeps on disk between LIST
# and RETR.  Past this, a new render is dropped once its size is known and made again when
# the client asks for it (one more upstream fetch): a mailbox full of large flagged messages
# costs a session at most this much spool, plus the message in flight, instead of one copy
# of each (a host's worst case is max_sessions times this).
KEPT_RENDERS_BUDGET = 32 * 1024 * 1024


class SessionSpool:
    """One session's spool directory, made when first needed, removed when the session ends."""

    __slots__ = ("_dir", "_kept", "_kept_total", "_root")

    def __init__(self, root: Path) -> None:
        self._root = root
        self._dir: Path | None = None
        self._kept: dict[str, int] = {}  # file name -> octets, renders kept for a later RETR
        self._kept_total = 0

    def keep(self, path: Path) -> bool:
        """Keep ``path`` (a render) for a later RETR if the session's budget allows; otherwise
        remove it (the caller makes it again when needed).  True if kept."""
        size = path.stat().st_size
        self._kept_total -= self._kept.pop(path.name, 0)
        if self._kept_total + size > KEPT_RENDERS_BUDGET:
            path.unlink(missing_ok=True)
            return False
        self._kept[path.name] = size
        self._kept_total += size
        return True

    def file(self, name: str) -> Path:
        if self._dir is None:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir = self._root / f"{os.getpid()}-{secrets.token_hex(8)}"
            self._dir.mkdir(mode=0o700)
        return self._dir / name

    def remove(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._kept.clear()
        self._kept_total = 0


async def spool_body(chunks: BodyChunks, path: Path, limit: int | None) -> Spooled:
    """A multi-line body into ``path`` (mode 0600) as it comes, unstuffed: at most ``limit``
    octets are kept (the rest is read and dropped)."""
    digest, unstuffer, length = hashlib.sha256(), Unstuffer(), 0
    room = limit if limit is not None else -1
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        async for chunk in chunks:
            if room == 0:
                continue
            data = unstuffer.feed(chunk)
            if room > 0:
                data, room = data[:room], max(room - len(data), 0)
            digest.update(data)
            length += len(data)
            handle.write(data)
    return Spooled(path, digest.hexdigest()[:16], length)


async def send_file(client: ClientSink, paths: tuple[Path, ...], top_lines: int | None) -> int:
    """The files' contents as one multi-line answer (stuffed, terminated, cut for TOP); the
    body octets sent (for the metric)."""
    size = sum(p.stat().st_size for p in paths)
    client.write(replies.ok(f"{size} octets" if top_lines is None else ""))
    stuffer, cut = Stuffer(), None if top_lines is None else TopCut(top_lines)
    sent = 0
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(RENDERED_WRITE_SLICE):
                if cut is not None:
                    chunk = cut.feed(chunk)
                wire = stuffer.feed(chunk)
                sent += len(wire)
                client.write(wire)
                await client.drain()
                if cut is not None and cut.done:
                    break
    tail = stuffer.finish()
    client.write(tail)
    return sent + len(tail)


async def stream_with_header(upstream: UpstreamConnection, client: ClientSink, cmd: Command,
                             size: int, top_lines: int | None, new_head: HeadRewrite,
                             max_header: int) -> int:
    """The upstream's answer with its header block replaced by ``new_head(header)``, the
    body relayed as it comes (still dot-stuffed); the message is never held whole.  A header
    block longer than ``max_header`` is taken as it was read so far.  An -ERR goes to the
    client as it is.  Returns the body octets relayed after the header."""
    status = await upstream.request(cmd)
    if not status.multiline:
        client.write(status.raw)
        return 0
    chunks = upstream.body()
    unstuffer, seen, ended = Unstuffer(), bytearray(), True
    async for chunk in chunks:
        seen += unstuffer.feed(chunk)
        if header_end(seen) is not None or len(seen) > max_header:
            ended = False
            break
    # No blank line and the body ended: the message is all header.  Else a hostile header
    # block: what was read is the header.
    end = header_end(seen)
    if end is None:
        end = len(seen)
    head = new_head(bytes(seen[:end]))
    ok = replies.ok(f"{size} octets" if top_lines is None else "")
    # The Stuffer starts at a line start; the upstream's remaining bytes are already
    # stuffed relative to their own line starts.
    stuffer = Stuffer()
    client.write(ok + stuffer.feed(head + seen[end:]))
    if ended:
        client.write(stuffer.finish())
        return 0
    return await relay_body(chunks, client)


def renamed_head(head: bytes) -> bytes:
    return scan_jobs.rename_forged_headers(head)


def unscanned_head(entry: CachedVerdict) -> HeadRewrite:
    prefix = scan_jobs.unscanned_prefix(entry.reasons)
    return lambda head: prefix + scan_jobs.rename_forged_headers(head)
