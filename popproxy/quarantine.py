"""The quarantine: held originals on disk, with metadata, for `popproxy quarantine ...`.

Layout: ``<dir>/<id>.eml`` (the original, byte for byte) and ``<id>.json`` (who, when, why,
released).  The id is derived from the message bytes, so holding the same message twice keeps
one copy; each mailbox that received it is added to ``recipients``.  ``<dir>/boxes/<box>``
lists the ids whose notice that mailbox deleted (the original is gone upstream, issue 19 item
9): once released, the proxy serves them from here (popproxy.proxy.released).  The directory
is 0700 and every file 0600 (they hold mail, user names and reasons), tightened if found wider.
"""

from __future__ import annotations

import email.policy
import json
import logging
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, replace
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TypedDict

from popproxy.statefiles import PRIVATE_FILE, open_private, private_dir, tighten, write_private

log = logging.getLogger("popproxy.quarantine")

ID_CHARS = frozenset("0123456789abcdef")
# describe() reads this much of a held original: a header block is a few KiB (longer ones are
# hostile, and their subject is not worth reading further for).
DESCRIBE_BYTES = 64 * 1024
# Each described field is cut to this many characters (one line of `quarantine list`).
DESCRIBE_CHARS = 200


# A mailbox: the hash naming it (verdict_record.mailbox_key), 16 hex digits: a safe file name.
BOX_CHARS = ID_CHARS

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
    upstream: str = ""
    subject: str = ""
    sender: str = ""
    date: str = ""
    # (user, upstream) of every mailbox the same bytes were held for, the first one included.
    recipients: tuple[tuple[str, str], ...] = ()

    @property
    def everyone(self) -> tuple[tuple[str, str], ...]:
        """Every (user, upstream) that received it (entries from before ``recipients``: one)."""
        return self.recipients or ((self.user, self.upstream),)


class Described(TypedDict):
    subject: str
    sender: str
    date: str


def describe(original: Path) -> Described:
    """Subject, sender and date of a held original, for ``popproxy quarantine list``: read from
    its first ``DESCRIBE_BYTES``, decoded (RFC 2047), control characters dropped, cut short."""
    with original.open("rb") as handle:
        head = handle.read(DESCRIBE_BYTES)
    try:
        parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        fields = {key: str(parsed.get(name, "") or "") for key, name in
                  (("subject", "Subject"), ("sender", "From"), ("date", "Date"))}
    except Exception:  # a hostile header must not stop the hold
        fields = {"subject": "", "sender": "", "date": ""}
    subject, sender, date = ("".join(c for c in fields[key] if c.isprintable())[:DESCRIBE_CHARS]
                             for key in ("subject", "sender", "date"))
    return Described(subject=subject, sender=sender, date=date)


def _write_meta(path: Path, held: HeldMessage) -> None:
    """Replace the metadata file at once (a rename): sessions of other processes read it while
    the CLI releases or another mailbox's hold adds a recipient, and must never see it half
    written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    write_private(tmp, json.dumps(asdict(held)).encode())
    os.replace(tmp, path)


class QuarantineStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Where mailboxes' box files are, as a string: joined with a box at every login.
        self._boxes_prefix = os.path.join(directory, "boxes", "")
        # id -> ((mtime_ns, size) of its .json, released): see ``released``.
        self._released: dict[str, tuple[tuple[int, int], bool]] = {}

    def _paths(self, message_id: str) -> tuple[Path, Path]:
        if not message_id or set(message_id) - ID_CHARS:  # ids are hex: no path tricks
            raise KeyError(message_id)
        return self.directory / f"{message_id}.eml", self.directory / f"{message_id}.json"

    def hold(self, held: HeldMessage, original: bytes) -> None:
        private_dir(self.directory)
        eml, _ = self._paths(held.id)
        if not eml.exists():
            fd = open_private(eml, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "wb") as handle:
                handle.write(original)
        else:  # held before files were made private
            tighten(eml, PRIVATE_FILE)
        self._record(held)

    def hold_file(self, held: HeldMessage, original: Path) -> None:
        """``hold`` for an original too large to keep in memory, spooled to ``original`` (a
        0600 file on the same file system): moved into place."""
        private_dir(self.directory)
        eml, _ = self._paths(held.id)
        if eml.exists():
            original.unlink(missing_ok=True)
        else:
            shutil.move(original, eml)  # a rename, or a copy when on another file system
            tighten(eml, PRIVATE_FILE)
        self._record(held)

    def _record(self, held: HeldMessage) -> None:
        """Write ``held``'s metadata, or add its recipient to the entry already there."""
        _, meta = self._paths(held.id)
        if not meta.exists():
            _write_meta(meta, replace(held, recipients=held.everyone))
            return
        tighten(meta, PRIVATE_FILE)
        try:
            known = self.get(held.id)
        except (KeyError, TypeError, ValueError):  # unreadable: left as found, for an admin
            return
        if held.everyone[0] not in known.everyone:
            _write_meta(meta, replace(known, recipients=known.everyone + held.everyone[:1]))

    def get(self, message_id: str) -> HeldMessage:
        _, meta = self._paths(message_id)
        if not meta.exists():
            raise KeyError(message_id)
        data = json.loads(meta.read_text())
        data["reasons"] = tuple(data["reasons"])
        data["recipients"] = tuple(tuple(r) for r in data.get("recipients", ()))
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
        except (KeyError, TypeError, ValueError):  # unknown, or metadata an admin broke
            return False
        if len(self._released) >= MAX_RELEASED_MEMO:
            self._released.clear()
        self._released[message_id] = (version, answer)
        return answer

    def release(self, message_id: str) -> HeldMessage:
        held = replace(self.get(message_id), released=True)
        _write_meta(self._paths(message_id)[1], held)
        return held

    def remove(self, message_id: str) -> None:
        """Forget a held message (purge): its original and its metadata."""
        for path in self._paths(message_id):
            path.unlink(missing_ok=True)

    def purge(self, older_than: float, now: float) -> list[str]:
        """Remove every message held more than ``older_than`` seconds before ``now`` (released
        or not: retention is the admin's word); the ids removed."""
        removed = [held.id for held in self.list() if held.held_at < now - older_than]
        for message_id in removed:
            self.remove(message_id)
        return removed

    # ------------------------------------------------ notices deleted by a mailbox (item 9)
    def _box_file(self, box: str) -> Path:
        if not box or set(box) - BOX_CHARS:
            raise KeyError(box)
        return self.directory / "boxes" / box

    def _box_ids(self, box: str) -> list[str]:
        if not box or set(box) - BOX_CHARS:
            raise KeyError(box)
        # Read at every login with scanning on, and most boxes have no file: a string path and
        # open(), not Path arithmetic and read_text (half the cost, issue 18); access() first,
        # as a missing file's FileNotFoundError cost more than the look-up itself (2.7 vs 0.8 us).
        path = self._boxes_prefix + box
        if not os.access(path, os.F_OK):
            return []
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return []
        return [line for line in text.split() if line and not set(line) - ID_CHARS]

    def _write_box(self, box: str, ids: list[str]) -> None:
        path = self._box_file(box)
        if not ids:
            path.unlink(missing_ok=True)
            return
        private_dir(path.parent)
        write_private(path, "".join(f"{i}\n" for i in ids).encode())

    def notices_deleted(self, box: str, ids: set[str]) -> None:
        """Mailbox ``box`` deleted the notices of ``ids`` (its upstream copies are gone)."""
        known = self._box_ids(box)
        self._write_box(box, known + sorted(ids - set(known)))

    def pending(self, box: str) -> list[HeldMessage]:
        """Released messages whose notice ``box`` deleted: to be served from here."""
        found = []
        for message_id in self._box_ids(box):
            try:
                held = self.get(message_id)
            except (KeyError, TypeError, ValueError):
                continue  # purged (or unreadable)
            if held.released and self._paths(message_id)[0].exists():
                found.append(held)
        return found

    def delivered(self, box: str, ids: set[str]) -> None:
        """``box`` received and deleted the released originals ``ids``: not served again."""
        self._write_box(box, [i for i in self._box_ids(box) if i not in ids])

    def list(self) -> list[HeldMessage]:
        if not self.directory.exists():
            return []
        found = []
        for message_id in sorted(p.stem for p in self.directory.glob("*.json")):
            try:
                found.append(self.get(message_id))
            except (KeyError, TypeError, ValueError):  # gone meanwhile, or broken by hand
                log.warning("quarantine: skipping unreadable entry %s", message_id)
        return sorted(found, key=lambda h: h.held_at)
