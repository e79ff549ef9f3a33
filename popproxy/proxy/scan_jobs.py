"""The work a scan worker process does, as plain functions: judge a message, render an action.

Both run in :mod:`popproxy.proxy.scan_worker` child processes, never on the event loop: a
hostile message may cost its time budget of one core there, and the worker is killed if it
runs past it (:mod:`popproxy.proxy.scan_pool`).  Nothing here does I/O beyond writing the
rendered message to the spool file it is given.

The parent and its workers exchange JSON (never pickle): a worker parses attacker input, so
what it sends back is treated as data only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from popproxy.scan import Scanner, ScanSettings, Signal, Verdict, apply_action
from popproxy.scan.actions import quarantine_notice
from popproxy.scan.headers import OWN_PREFIX
from popproxy.scan.risky import RiskyMode, has_risky_attachment
from popproxy.scan.sized_defang import sized_defang
from popproxy.scan.sized_notice import padded_notice
from popproxy.scan.verdict import Action
from popproxy.scan.weights import WEIGHTS

# Our own header fields.  Any field of the sender's with this prefix is renamed on every path
# (rendered, streamed), so a client never sees a forged verdict beside ours.  The new name has
# the same length, so a message streamed with a size announced earlier keeps that size.
FORGED_PREFIX = b"X-Original-"
# The first reason of a quarantine whose notice is our own minimal one (the action's rendering
# failed or ran out of time): re-rendering it later gives the same bytes, so sizes stay equal.
RENDER_FAILED = "render-failed"


@dataclass(frozen=True, slots=True)
class RenderOrder:
    """What a worker needs to render one message: the cached verdict's fields."""

    action: Action
    score: float
    reasons: tuple[str, ...]
    scanned_at: float
    quarantine_id: str

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "score": self.score, "reasons": list(self.reasons),
                "scanned_at": self.scanned_at, "quarantine_id": self.quarantine_id}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RenderOrder:
        """Raises KeyError, TypeError or ValueError on anything that is not an order."""
        return cls(as_action(data["action"]), float(data["score"]),
                   tuple(str(r) for r in data["reasons"]), float(data["scanned_at"]),
                   str(data["quarantine_id"]))


# ---------------------------------------------------------------- verdicts as JSON
def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
    return {"action": verdict.action, "score": verdict.score, "reasons": list(verdict.reasons),
            "cause": verdict.cause,
            "signals": [[s.name, s.weight, s.detail] for s in verdict.signals]}


def as_action(value: object) -> Action:
    for action in get_args(Action):
        if value == action:
            return cast(Action, action)
    raise ValueError("not an action")


def _signal_name(value: object) -> str:
    """A known signal name: they become metric labels, so a worker's answer (data from a
    process that parsed hostile input) must not be able to invent new ones."""
    if not isinstance(value, str) or value not in WEIGHTS:
        raise ValueError("not a signal")
    return value


def verdict_from_json(data: dict[str, Any]) -> Verdict:
    """Raises KeyError, TypeError or ValueError on anything that is not a verdict."""
    action = as_action(data["action"])
    cause = data.get("cause")
    if cause not in (None, "too-large", "time-budget", "error"):
        raise ValueError("not a cause")
    signals = tuple(Signal(name=_signal_name(n), weight=float(w), detail=str(d))
                    for n, w, d in data["signals"])
    return Verdict(action=action, score=float(data["score"]),
                   reasons=tuple(str(r) for r in data["reasons"]), signals=signals, cause=cause)


# ---------------------------------------------------------------- the jobs
def judge(scanner: Scanner, message: bytes, truncated: bool = False) -> dict[str, Any]:
    """The answer to a scan job: the verdict, and the evidence the proxy caches to re-score
    it later (popproxy.scan.evidence; None when unscanned).  ``truncated``: ``message`` is
    the head of a message over the size cap."""
    verdict, kept = scanner.scan_evidence(message, truncated=truncated)
    return {"verdict": verdict_to_json(verdict),
            "evidence": None if kept is None else kept.to_json()}


def render(config: ScanSettings, original: bytes, order: RenderOrder) -> bytes:
    """The bytes the client receives for a non-pass verdict; the same bytes every time.

    Raises whatever the action raises on hostile MIME: the caller then quarantines the message
    behind our own notice (never the original with live links).
    """
    if order.action == "quarantine":
        if order.reasons[:1] == (RENDER_FAILED,):
            return fallback_notice(order.quarantine_id, order.scanned_at)
        verdict = Verdict(action="quarantine", score=order.score, reasons=order.reasons)
        return quarantine_notice(original, verdict, quarantine_id=order.quarantine_id,
                                 notice_from=config.notice_from, now=order.scanned_at)
    clean = rename_forged_headers(original)
    if order.action == "unscanned":
        return unscanned_prefix(order.reasons) + clean
    verdict = Verdict(action=order.action, score=order.score, reasons=order.reasons)
    return apply_action(clean, verdict, config, clock=lambda: order.scanned_at)


def render_to_file(config: ScanSettings, original: bytes, order: RenderOrder, out: Path) -> int:
    """``render`` into a new spool file (mode 0600); returns its size in octets.

    Every line of the copy ends with CRLF, the last one too: on the wire lines always do
    (RFC 1939 section 3), and the dot-stuffer only knows CRLF lines, so a bare LF left in the
    copy would make the octets sent differ from the size the client is told.
    """
    rendered = to_crlf(render(config, original, order))
    if rendered and not rendered.endswith(b"\r\n"):
        rendered += b"\r\n"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(rendered)
    return len(rendered)


def render_sized(original: bytes, order: RenderOrder, size: int,
                 risky: RiskyMode = "keep") -> tuple[bytes, bool]:
    """The client's copy of a message it was told is ``size`` octets before it was judged (the
    listing budget): exactly ``size`` octets, and whether the original must be held.

    tag and defang: the size-preserving defang (a tag cannot add its header fields without
    growing the message, so it is degraded to the stronger defang, never to the original);
    quarantine, or a defang impossible in place: our notice padded to ``size``.  So is a
    message with a risky attachment ``risky`` (scan.risky_attachments) would remove: the
    size-preserving defang keeps every attachment's bytes.
    """
    if order.action in ("tag", "defang") and (risky == "keep"
                                              or not has_risky_attachment(original)):
        defanged = sized_defang(rename_forged_headers(original))
        if defanged is not None and len(defanged) == size:
            return defanged, False
    return padded_notice(order.quarantine_id, order.scanned_at, size), True


def render_sized_to_file(original: bytes, order: RenderOrder, size: int,
                         out: Path, risky: RiskyMode = "keep") -> dict[str, Any]:
    """``render_sized`` into a new spool file (mode 0600): the worker's answer."""
    data, held = render_sized(original, order, size, risky)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return {"size": len(data), "held": held}


def to_crlf(data: bytes) -> bytes:
    """Bare LFs made CRLF (one linear pass each way; a CR alone is left as it is)."""
    if b"\n" not in data.replace(b"\r\n", b""):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------- our own header lines
def unscanned_prefix(reasons: tuple[str, ...], verdict: str = "unscanned") -> bytes:
    """Header lines put in front of a message delivered as it is.

    Prepending keeps the original untouched after them, so even a message too large to hold
    can be streamed; RFC 5322 section 3.6 allows header fields in any order.
    """
    reason = (reasons[0] if reasons else verdict).replace("\r", " ").replace("\n", " ")[:200]
    return (b"X-Popproxy-Verdict: " + verdict.encode() + b"\r\nX-Popproxy-Reasons: "
            + reason.encode("ascii", "replace") + b"\r\n")


def fallback_notice(quarantine_id: str, scanned_at: float) -> bytes:
    """A minimal quarantine notice built from our own data only (it cannot fail)."""
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(scanned_at))
    return (b"From: popproxy <postmaster@localhost>\r\nSubject: [QUARANTINED] a message was held"
            b"\r\nDate: " + when.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"A message was held by the mail security proxy.\r\nQuarantine id: "
            + quarantine_id.encode("ascii", "replace") + b"\r\n")


def sized_notice(quarantine_id: str, scanned_at: float, size: int) -> bytes:
    """``fallback_notice`` padded (or cut) to exactly ``size`` octets.

    Used when a message whose size the client was already told cannot be rendered now: RFC 1939
    section 5 wants RETR to return the octets LIST announced, and the original must not leak.
    """
    notice = fallback_notice(quarantine_id, scanned_at)
    if len(notice) >= size:
        return notice[:size]
    filler = size - len(notice)
    lines = (b"." * 76 + b"\r\n") * (filler // 78)
    rest = filler - len(lines)
    tail = (b"." * (rest - 2) + b"\r\n") if rest >= 2 else b" " * rest
    return notice + lines + tail


def rename_forged_headers(message: bytes) -> bytes:
    """Rename the sender's own ``X-Popproxy-*`` fields to ``X-Original-*`` (same length).

    Only the header block is looked at (up to the first empty line), in one linear pass.
    """
    end = _header_end(message)
    head = message[:end]
    if OWN_PREFIX not in head.lower():
        return message
    out = bytearray()
    for line in head.splitlines(keepends=True):
        if line[:len(OWN_PREFIX)].lower() == OWN_PREFIX:
            line = FORGED_PREFIX + line[len(OWN_PREFIX):]
        out += line
    return bytes(out) + message[end:]


def _header_end(message: bytes) -> int:
    """Where the header block ends (after its blank line), or the message's end."""
    crlf, lf = message.find(b"\r\n\r\n"), message.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf + 4
    return len(message) if lf == -1 else lf + 2
