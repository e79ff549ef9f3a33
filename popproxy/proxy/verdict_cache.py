"""Scan results remembered per message (upstream, user, UIDL), so sizes stay consistent.

RFC 1939 wants the octet counts of STAT and LIST to equal what RETR returns, and UIDL never
changes.  The proxy therefore scans a message before it first reports its size, stores what
the client will receive (action, reasons, resulting size), and re-applies the same action to
the same original on RETR/TOP.  Entries are appended to a JSON-lines file in the state
directory and survive restarts; keys are hashes (no usernames in the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("popproxy.scan")

CACHE_FILE = "verdicts.jsonl"


@dataclass(frozen=True)
class CachedVerdict:
    action: str  # pass, tag, defang, quarantine, unscanned
    score: float
    reasons: tuple[str, ...]
    size: int  # octets the client receives for this message
    scanned_at: float
    generation: str  # scanner settings + feed versions it was judged with
    quarantine_id: str = ""
    signals: tuple[str, ...] = ()
    # A scanner error or timeout: good for this session only, judged again next time.
    transient: bool = False


def cache_key(upstream: str, username: str, uidl: bytes) -> str:
    material = b"\0".join((upstream.encode(), username.casefold().encode(), uidl))
    return hashlib.sha256(material).hexdigest()[:32]


class VerdictCache:
    """In memory, persisted by appending; the last line for a key wins on load."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, CachedVerdict] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
                key = record.pop("key")
                record["reasons"] = tuple(record["reasons"])
                record["signals"] = tuple(record.get("signals", ()))
                record.pop("transient", None)
                self._entries[key] = CachedVerdict(**record)
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d: unreadable verdict cache line skipped", path, number)

    def get(self, key: str) -> CachedVerdict | None:
        return self._entries.get(key)

    def put(self, key: str, entry: CachedVerdict) -> None:
        self._entries[key] = entry
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, **asdict(entry)}) + "\n")
