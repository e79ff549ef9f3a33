"""The verdict cache's file (``verdicts.jsonl``): private opens, and carried-over verdicts
written once per listing instead of once per message.

After a feed, weights, model or threshold change a session's first listing re-scores every
cached verdict of the mailbox (issue 17); most keep their action and are *carried over*: the
same entry, only its generation changed.  Writing each one as a full line, with its own
open/append/close, was most of a 20,000-message STAT (bench/big_mailbox.py, bench/README.md).
Instead the keys are collected here and appended as one line per (old, new) generation pair::

    {"carried": "<new generation>", "from": "<old generation>", "keys": ["<key>", ...]}

which on load moves each listed key's entry from the old generation to the new one (an entry
of any other generation is left alone: a later full line, or another process's verdict).

Crash safety: carried keys not yet written are lost with the process, and that is all: the
file still holds their entries under the old generation, and the next listing re-scores them
to the same result (re-scoring is deterministic and reads no message).  Verdicts that cost a
download are never batched: they are appended at once.  Like every append, a line is opened
and written at flush time, so a compaction by another process (``os.replace`` of the file)
is no worse for it than for a per-message append.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, cast

CARRIED = "carried"
# Carried-over keys held before they are written anyway (about 40 octets each in the line):
# bounds the line's size and how much re-scoring a crash mid-listing can cost.
MAX_PENDING = 5_000


def open_private(path: Path, mode: str) -> TextIO:
    """Open for writing with mode 0600 in a 0700 directory: keys are hashes, but the file
    still tells when each mailbox was read and what its mail was judged."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # tighten a file an older version left world-readable
    return cast(TextIO, os.fdopen(fd, mode, encoding="utf-8"))


class CarriedBatch:
    """Keys carried from one generation to another, not written yet (see the module)."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, str]] = {}  # key -> (old generation, new generation)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, old: str, new: str) -> None:
        self._keys[key] = (old, new)

    def discard(self, key: str) -> None:
        """The key's entry was replaced or dropped: its carried line must not be written."""
        self._keys.pop(key, None)

    def clear(self) -> None:
        self._keys.clear()

    def take(self, current: Callable[[str, str], bool]) -> tuple[list[str], int]:
        """(lines to append, keys in them), emptying the batch.  ``current(key, generation)``
        tells whether the key's entry is still the one carried to that generation."""
        groups: dict[tuple[str, str], list[str]] = {}
        for key, pair in self._keys.items():
            if current(key, pair[1]):
                groups.setdefault(pair, []).append(key)
        self._keys.clear()
        lines = [carried_line(old, new, keys) for (old, new), keys in groups.items()]
        return lines, sum(len(keys) for keys in groups.values())


def carried_line(old: str, new: str, keys: list[str]) -> str:
    # One json.dumps per batch (the encoder's C loop), not one per key as full lines were.
    return json.dumps({CARRIED: new, "from": old, "keys": keys}, separators=(",", ":")) + "\n"


def parse_carried(record: dict[str, Any]) -> tuple[str, str, Iterator[str]]:
    """(old, new, keys) of a carried line; ValueError for one this version cannot read."""
    old, new, keys = record.get("from"), record.get(CARRIED), record.get("keys")
    if not isinstance(old, str) or not isinstance(new, str) or not isinstance(keys, list):
        raise ValueError("not a carried line")
    return old, new, (key for key in keys if isinstance(key, str))
