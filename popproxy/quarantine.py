"""The quarantine: held originals on disk, with metadata, for `popproxy quarantine ...`.

Layout: ``<dir>/<id>.eml`` (the original, byte for byte) and ``<id>.json`` (who, when, why,
released).  The id is derived from the message bytes, so holding the same message twice is
idempotent.  Released messages are delivered unchanged in later sessions.  The directory is
0700 and every file 0600 (they hold mail, user names and reasons), tightened if found wider.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from popproxy.statefiles import PRIVATE_FILE, open_private, private_dir, tighten, write_private

ID_CHARS = frozenset("0123456789abcdef")
# Released answers remembered per metadata file version (``released``); past this many held
# messages the memo starts again (an entry is a few hundred bytes).
MAX_RELEASED_MEMO = 100_000


@dataclass(frozen=True)
class HeldMessage:
    id: str
    user: str
    held_at: float
    score: float
    reasons: tuple[str, ...]
    size: int
    released: bool = False


class QuarantineStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # id -> ((mtime_ns, size) of its .json, released): see ``released``.
        self._released: dict[str, tuple[tuple[int, int], bool]] = {}

    def _paths(self, message_id: str) -> tuple[Path, Path]:
        if not message_id or set(message_id) - ID_CHARS:  # ids are hex: no path tricks
            raise KeyError(message_id)
        return self.directory / f"{message_id}.eml", self.directory / f"{message_id}.json"

    def hold(self, held: HeldMessage, original: bytes) -> None:
        private_dir(self.directory)
        eml, meta = self._paths(held.id)
        if not eml.exists():
            fd = open_private(eml, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "wb") as handle:
                handle.write(original)
        else:  # held before files were made private
            tighten(eml, PRIVATE_FILE)
        if not meta.exists():
            write_private(meta, json.dumps(asdict(held)).encode())
        else:
            tighten(meta, PRIVATE_FILE)

    def hold_file(self, held: HeldMessage, original: Path) -> None:
        """``hold`` for an original too large to keep in memory, spooled to ``original`` (a
        0600 file on the same file system): moved into place."""
        private_dir(self.directory)
        eml, meta = self._paths(held.id)
        if eml.exists():
            original.unlink(missing_ok=True)
        else:
            shutil.move(original, eml)  # a rename, or a copy when on another file system
            tighten(eml, PRIVATE_FILE)
        if not meta.exists():
            write_private(meta, json.dumps(asdict(held)).encode())

    def get(self, message_id: str) -> HeldMessage:
        _, meta = self._paths(message_id)
        if not meta.exists():
            raise KeyError(message_id)
        data = json.loads(meta.read_text())
        data["reasons"] = tuple(data["reasons"])
        return HeldMessage(**data)

    def original(self, message_id: str) -> bytes:
        eml, _ = self._paths(message_id)
        if not eml.exists():
            raise KeyError(message_id)
        return eml.read_bytes()

    def released(self, message_id: str) -> bool:
        """Whether the held message was released (False when unknown).  Asked for every held
        message at every listing (975 of bench/big_mailbox.py's 20,000): the answer is kept
        per version of its metadata file, so a listing costs a stat per held message, not a
        read and a JSON parse.  A release (another process) rewrites the file: a new version."""
        try:
            found = self._paths(message_id)[1].stat()
        except (KeyError, OSError):
            return False
        version = (found.st_mtime_ns, found.st_size)
        known = self._released.get(message_id)
        if known is not None and known[0] == version:
            return known[1]
        try:
            answer = self.get(message_id).released
        except KeyError:
            return False
        if len(self._released) >= MAX_RELEASED_MEMO:
            self._released.clear()
        self._released[message_id] = (version, answer)
        return answer

    def release(self, message_id: str) -> HeldMessage:
        held = replace(self.get(message_id), released=True)
        write_private(self._paths(message_id)[1], json.dumps(asdict(held)).encode())
        return held

    def list(self) -> list[HeldMessage]:
        if not self.directory.exists():
            return []
        ids = sorted(p.stem for p in self.directory.glob("*.json"))
        return sorted((self.get(i) for i in ids), key=lambda h: h.held_at)
