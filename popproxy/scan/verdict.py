"""What a scan returns: signals, and the verdict built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from popproxy.scan.limits import MAX_DETAIL_CHARS

Action = Literal["pass", "tag", "defang", "quarantine", "unscanned"]

# Why a message was not scanned: too big, over the time budget, or a bug in the scanner.
UnscannedCause = Literal["too-large", "time-budget", "error"]

ACTIONS: tuple[Action, ...] = ("pass", "tag", "defang", "quarantine", "unscanned")


def clean_detail(text: str) -> str:
    """Make a detail safe for a header or a log line: printable ASCII, short.

    Details come from hostile mail (host names, file names), so control characters (CR/LF header
    injection, U+202E) are escaped and the length is capped.
    """
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(ch if " " <= ch < "\x7f" else "?" for ch in escaped)
    if len(printable) > MAX_DETAIL_CHARS:
        return printable[: MAX_DETAIL_CHARS - 3] + "..."
    return printable


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One piece of evidence: a rule name, its weight in the score, and a short detail.

    ``detail`` holds a host, file name or count, never message text.
    """

    name: str
    weight: float
    detail: str = ""

    def reason(self) -> str:
        """The human-readable reason, e.g. ``link-ip-host (198.51.100.7)``."""
        return f"{self.name} ({self.detail})" if self.detail else self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of one scan.

    Attributes:
        action: what to do with the message; "unscanned" when no verdict could be reached.
        score: the summed weights of the counted signals (0.0 when unscanned).
        reasons: human-readable reasons, strongest first.
        signals: every signal found, strongest first.
        cause: for "unscanned" only, why.
    """

    action: Action
    score: float
    reasons: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = ()
    cause: UnscannedCause | None = None

    @property
    def kind(self) -> Action:
        """Alias of :attr:`action`."""
        return self.action

    @property
    def flagged(self) -> bool:
        """True when the action is anything but "pass" (unscanned included)."""
        return self.action != "pass"

    @classmethod
    def unscanned(cls, cause: UnscannedCause, reason: str) -> Verdict:
        """A verdict for a message the scanner gave up on."""
        return cls(action="unscanned", score=0.0, reasons=(f"unscanned: {reason}",), cause=cause)
