"""``popproxy warm``'s bookkeeping, without I/O of its own: pacing, resume file, progress text.

Kept apart from the warming itself (``warm.py``) so each piece is tested with a fake clock
and in-memory streams: no sleeps, no sockets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from popproxy.statefiles import private_dir

# Resume file in state_dir: one mailbox hash per line (verdict_cache.mailbox_key), never a
# user name, like every other file there.
PROGRESS_FILE = "warm-done.txt"
# Characters of the progress bar on a terminal.
BAR_WIDTH = 30


class Pace:
    """Spaces downloads so the upstream sees at most ``messages_per_s`` messages and
    ``octets_per_s`` octets per second on average (either may be None: not limited).

    ``charge(started, messages, octets)`` books a download that began at ``started``;
    ``wait(now)`` is how long to sleep before the next one may begin.  Time that passed while
    nothing was downloaded (listings, cache hits) is not saved up for a burst later.
    """

    def __init__(self, messages_per_s: float | None, octets_per_s: float | None) -> None:
        for rate in (messages_per_s, octets_per_s):
            if rate is not None and rate <= 0:
                raise ValueError("a rate must be positive")
        self._messages_per_s = messages_per_s
        self._octets_per_s = octets_per_s
        self._free_at: float | None = None

    def charge(self, started: float, messages: int, octets: int) -> None:
        cost = 0.0
        if self._messages_per_s is not None:
            cost = messages / self._messages_per_s
        if self._octets_per_s is not None:
            cost = max(cost, octets / self._octets_per_s)
        begin = started if self._free_at is None else max(self._free_at, started)
        self._free_at = begin + cost

    def wait(self, now: float) -> float:
        return 0.0 if self._free_at is None else max(0.0, self._free_at - now)


class ProgressFile:
    """The mailboxes already warmed (by hash), appended to as each one finishes, so an
    interrupted run resumes where it stopped.  ``fresh`` starts over."""

    def __init__(self, state_dir: Path, fresh: bool = False) -> None:
        self.path = state_dir / PROGRESS_FILE
        if fresh:
            self.path.unlink(missing_ok=True)
        self._done: set[str] = set()
        if self.path.exists():
            self._done = {line.strip() for line in self.path.read_text().splitlines()
                          if line.strip()}

    def __contains__(self, mailbox: str) -> bool:
        return mailbox in self._done

    def record(self, mailbox: str) -> None:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as handle:
            handle.write(mailbox + "\n")  # one write per line: a crash loses at most this one
        self._done.add(mailbox)


@dataclass
class Totals:
    """What a run has done so far."""

    users: int = 0  # in the list
    users_done: int = 0  # warmed now, skipped as done before, or failed
    users_failed: int = 0
    messages: int = 0  # of the current mailbox, listed
    messages_done: int = 0  # of the current mailbox, judged or found cached
    downloaded: int = 0  # over the run: messages read from the upstream to judge them
    octets: int = 0  # over the run: octets read to judge


class Display:
    """Progress on ``stream``: a bar redrawn in place on a terminal, plain lines otherwise
    (one per mailbox, so a log file or a pipe is not flooded)."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self._stream = stream
        self._tty = tty

    def tick(self, totals: Totals) -> None:
        if not self._tty:
            return
        share = totals.messages_done / totals.messages if totals.messages else 1.0
        filled = int(share * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {totals.messages_done}/{totals.messages} messages, "
                           f"mailbox {totals.users_done + 1}/{totals.users}, "
                           f"{_mb(totals.octets)} read")
        self._stream.flush()

    def mailbox(self, totals: Totals, label: str, outcome: str) -> None:
        """One mailbox finished (``label``: its position, never the user name's hash)."""
        prefix = "\r\033[K" if self._tty else ""
        self._stream.write(f"{prefix}{label}: {outcome}; run so far: {totals.downloaded} "
                           f"downloaded, {_mb(totals.octets)} read\n")
        self._stream.flush()


def _mb(octets: int) -> str:
    return f"{octets / 1e6:.1f} MB"


def read_users(lines: Iterable[str]) -> list[str]:
    """User names from a list file: one per line; blank lines and ``#`` comments skipped."""
    names = (line.strip() for line in lines)
    return [name for name in names if name and not name.startswith("#")]
