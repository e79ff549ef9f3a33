"""``popproxy scan --explain``: why a message got its verdict, signal by signal.

The score is the sum of the strongest signal of each group (:func:`.scoring.combine`: an IP
host and an obfuscated IP host measure one thing).  Each signal is shown with its weight,
whether it counted or was shadowed by a stronger signal of its group, its detail, and its
evidence (the link's URL, the header field, the attachment's name), so an admin can check it.

The output goes to the admin's terminal: everything from the message is escaped (no control
characters, so no terminal escape sequences) and URLs are defanged (``hxxps://evil[.]example``)
so a terminal does not turn them into clickable links.  Wording (lure phrases, greetings) is
named by its rule only: message text is not shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from popproxy.scan.scoring import forces_tag, group_of
from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Signal, Verdict, clean_detail, clean_evidence


@dataclass(frozen=True, slots=True)
class Contribution:
    """One signal's part in the score.

    Attributes:
        signal: the signal.
        group: the group it counts in (strongest member only).
        shadowed_by: the stronger signal of the group that counted instead ("" when this one
            counted).
    """

    signal: Signal
    group: str
    shadowed_by: str = ""

    @property
    def counted(self) -> bool:
        """True when the signal's weight is part of the score."""
        return not self.shadowed_by

    @property
    def points(self) -> float:
        """What the signal adds to the score."""
        return self.signal.weight if self.counted else 0.0


def contributions(signals: Iterable[Signal]) -> list[Contribution]:
    """Each rule's signal (the first of each name), strongest first, counted or shadowed.

    The same choice as :func:`.scoring.combine`: per group, the highest weight counts (ties:
    the name first in alphabetical order).
    """
    per_name: dict[str, Signal] = {}
    for sig in signals:
        per_name.setdefault(sig.name, sig)
    winners: dict[str, Signal] = {}
    out = []
    for sig in sorted(per_name.values(), key=lambda s: (-s.weight, s.name)):
        group = group_of(sig.name)
        winner = winners.setdefault(group, sig)
        out.append(Contribution(sig, group, "" if winner is sig else winner.name))
    return out


# Where the evidence of a signal without a URL or header lies, by rule-name prefix.
_WHERE: tuple[tuple[str, str], ...] = (
    ("lure-", "wording of the subject or visible text (phrases not shown)"),
    ("advance-fee-", "advance-fee wording, and a free mailbox in From or Reply-To"),
    ("greeting-", "the greeting at the top of the text (not shown)"),
    ("text-obfuscated", "visible text or headers (not shown)"),
    ("attach-", "the attachment named above"),
    ("html-", "the HTML body"),
    ("image-link-", "the HTML body's links"),
    ("form-", "a form in the HTML body"),
    ("limit-", "a scanner limit ran out: part of the message went unjudged"),
    ("mime-", "the MIME structure"),
    ("spoofed-", "an X-Popproxy-* header the message arrived with"),
)


def evidence_of(signal: Signal) -> str:
    """What the admin checks: the signal's evidence, or where its evidence lies."""
    if signal.evidence:
        return defang(signal.evidence)
    for prefix, where in _WHERE:
        if signal.name.startswith(prefix):
            return where
    return ""


# A URL's scheme and authority: defanged so a terminal does not link it.
_URL_HEAD = re.compile(r"(?i)\b(h)(tt)(ps?)(://)([^/?#\s]*)")


def defang(text: str) -> str:
    """``text`` with its http(s) URLs defanged: hxxps://evil[.]example/path."""
    return _URL_HEAD.sub(
        lambda m: f"{m.group(1)}xx{m.group(3)}{m.group(4)}" + m.group(5).replace(".", "[.]"),
        text,
    )


def explain_lines(path: str, verdict: Verdict, thresholds: Thresholds) -> list[str]:
    """The --explain block of one message, one line per string."""
    lines = [_safe(path)]
    if verdict.action == "unscanned":
        lines.append(f"  verdict unscanned ({verdict.cause}): " + "; ".join(verdict.reasons))
        return lines
    lines.append(
        f"  verdict {verdict.action}, score {verdict.score:g} (tag at {thresholds.tag:g}, "
        f"defang at {thresholds.defang:g}, quarantine at {thresholds.quarantine:g})"
    )
    parts = contributions(verdict.signals)
    if not parts:
        lines.append("  no signals")
    for part in parts:
        lines.extend(_signal_lines(part))
    extra = model_points(verdict)
    if extra:
        lines.append(f"  +{extra:<4g} model     the trained combiner's weighing of these signals "
                     "and of the message's shape (links, sender domain, HTML), beyond the "
                     "table weights above")
    forcing = [p.signal.name for p in parts if forces_tag(p.signal.name)]
    if forcing and thresholds.action_for(verdict.score) == "pass":
        lines.append("  tagged although the score alone passes, because of: " + ", ".join(forcing))
    return lines


def _signal_lines(part: Contribution) -> list[str]:
    sig = part.signal
    detail = f" ({clean_detail(sig.detail)})" if sig.detail else ""
    if part.counted:
        head = f"  +{sig.weight:<4g} counted   {sig.name}{detail}"
    else:
        head = (f"   {sig.weight:<4g} shadowed  {sig.name}{detail}: "
                f"{part.shadowed_by} counts for group {part.group!r}")
    lines = [head]
    evidence = evidence_of(sig)
    if evidence:
        lines.append(f"                  evidence: {_safe(evidence)}")
    return lines


def model_points(verdict: Verdict) -> float:
    """What the trained combiner (:mod:`.model`) added to the table's sum; 0 with the weights
    combiner.  The model's score is never below the table's, so this is never negative."""
    table = sum(p.points for p in contributions(verdict.signals))
    return max(round(verdict.score - table, 2), 0.0)


def explain_record(verdict: Verdict) -> list[dict[str, Any]]:
    """The explanation as JSON-ready records (evidence not defanged: for programs); the
    trained combiner's share, if any, as a last record named "(model)"."""
    records = [
        {
            "signal": p.signal.name,
            "weight": p.signal.weight,
            "points": p.points,
            "group": p.group,
            "counted": p.counted,
            "shadowed_by": p.shadowed_by or None,
            "detail": p.signal.detail,
            "evidence": p.signal.evidence or evidence_of(p.signal),
        }
        for p in contributions(verdict.signals)
    ]
    extra = model_points(verdict)
    if extra:
        records.append({"signal": "(model)", "weight": extra, "points": extra, "group": "model",
                        "counted": True, "shadowed_by": None, "detail": "", "evidence": ""})
    return records


def _safe(text: str) -> str:
    return clean_evidence(text)
