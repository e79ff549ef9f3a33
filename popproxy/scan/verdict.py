"""What a scan returns: signals, and the verdict built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from popproxy.scan.limits import MAX_DETAIL_CHARS

Action = Literal["pass", "tag", "defang", "quarantine", "unscanned"]

# Why a message was not scanned: too big, over the time budget, or a bug in the scanner.
UnscannedCause = Literal["too-large", "time-budget", "error"]

ACTIONS: tuple[Action, ...] = ("pass", "tag", "defang", "quarantine", "unscanned")


# Characters of a signal's evidence (a URL, a header field): enough to read a phishing URL's
# host and path, and a bound on what a data: URL or a padded header keeps alive per verdict.
MAX_EVIDENCE_CHARS = 300


def clean_detail(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Make a detail safe for a header or a log line: printable ASCII, at most ``limit`` long.

    Details come from hostile mail (host names, file names), so control characters (CR/LF header
    injection, U+202E) are escaped and the length is capped.
    """
    escaped = text[: limit * 10].encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(ch if " " <= ch < "\x7f" else "?" for ch in escaped)
    if len(printable) > limit:
        return printable[: limit - 3] + "..."
    return printable


def clean_evidence(text: str) -> str:
    """Evidence made safe for a terminal (no escape sequences) and capped like a detail."""
    return clean_detail(text, MAX_EVIDENCE_CHARS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """One piece of evidence: a rule name, its weight in the score, and a short detail.

    ``detail`` holds a host, file name or count, never message text.  ``evidence`` is what
    an admin looks at to check the signal (the link's URL, the header field it came from),
    shown by ``popproxy scan --explain`` only: it is no part of the reasons, the verdict
    headers or the logs, nor of the verdict the scanner workers send back (it is neither
    compared nor shown in ``repr``).
    """

    name: str
    weight: float
    detail: str = ""
    evidence: str = field(default="", compare=False, repr=False)

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


def delivered_action(verdict: Verdict, fail_mode: str, fail_open_action: str,
                     too_large: bool = False) -> str:
    """What the proxy does with a message of ``verdict`` (``scan.fail_mode``,
    ``scan.fail_open_action`` of the policy): the one rule for the proxy and ``popproxy scan
    --config``.  A message that could not be judged is suspicious: quarantined when the fail
    mode is closed, else delivered with ``fail_open_action`` (never as it is).  ``too_large``:
    over ``max_message_bytes``, judged on its head; its body is streamed, so it can be tagged
    but not defanged: worse than tag is quarantined."""
    action: str = verdict.action
    if action == "unscanned":
        action = "quarantine" if fail_mode == "closed" else fail_open_action
    if too_large:
        action = "quarantine" if action in ("defang", "quarantine") else "tag"
    return action
