"""Session spool files: upstream answers and renders on disk (0600), never whole in memory."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("popproxy.scan")


@dataclass(frozen=True, slots=True)
class Spooled:
    """An upstream answer written to a spool file: its path, digest (id) and length."""

    path: Path
    digest: str
    length: int


def read_header(path: Path, limit: int) -> bytes | None:
    """A spooled message's header block (up to its blank line, or the whole message when it has
    none), reading at most ``limit`` + 4 bytes; None when the block is longer than ``limit``."""
    with path.open("rb") as spooled:
        data = bytearray(spooled.read(limit + 4))
    header = data[: header_end(data) or len(data)]
    return bytes(header) if len(header) <= limit else None


def cut_to_header(path: Path, limit: int) -> Spooled:
    """Cut a spooled message down to its header block, reading at most ``limit`` + 4 bytes
    (callers check :func:`read_header` first, or accept a block cut there)."""
    with path.open("rb") as spooled:
        data = bytearray(spooled.read(limit + 4))
    header = bytes(data[:header_end(data) or len(data)])
    write_private(path, header)
    return Spooled(path, "", len(header))


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def header_end(message: bytearray) -> int | None:
    """Where the body starts, as ``split_message`` splits (the first blank line, CRLF or LF
    style), or None while no blank line has been seen."""
    crlf, lf = message.find(b"\r\n\r\n"), message.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf + 4
    return None if lf == -1 else lf + 2


def sweep_stale_spools(spool_dir: Path) -> list[Path]:
    """Remove the session spools (``<pid>-<random>``) of processes that are gone: a proxy
    killed mid-session leaves copies of mail behind.  Spools of live processes (this one's
    sessions across a reload included) stay.  The directories removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in spool_dir.iterdir():
            pid = path.name.split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d spool directories of stopped processes", len(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
