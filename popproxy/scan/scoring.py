"""Signals -> score -> verdict.

Each rule counts once per message, and rules that are stronger forms of one another (an IP host
and an obfuscated IP host, a feed host hit and a feed domain hit) count only their strongest
member, so the score measures how many *independent* kinds of evidence there are.
"""

from __future__ import annotations

from collections.abc import Iterable

from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Action, Signal, Verdict

# Rules that measure the same thing at different strengths: only the strongest one counts.
_GROUPS: dict[str, str] = {
    "link-feed-host": "feed",
    "link-feed-domain": "feed",
    "link-feed-platform": "feed",
    "link-ip-host": "ip",
    "link-ip-obfuscated": "ip",
    "link-userinfo": "userinfo",
    "link-userinfo-host": "userinfo",
    "link-text-mismatch": "mismatch",
    "link-text-mismatch-brand": "mismatch",
    "link-brand-lookalike": "brand-host",
    "link-brand-in-host": "brand-host",
    "attach-risky-ext": "file-name",
    "attach-double-ext": "file-name",
    "attach-html-form": "html-file",
    "sender-brand-mismatch": "sender",
    "sender-brand-freemail": "sender",
    # An exhausted limit is one kind of evidence however many limits a message runs out.
    "limit-depth": "limit",
    "limit-parts": "limit",
    "limit-decoded": "limit",
    "limit-links": "limit",
    "limit-text": "limit",
    "limit-size": "limit",
    "limit-html": "limit",
    "limit-structure": "limit",
    "link-ip-private": "ip",
    "sender-brand-related": "sender",
    "limit-image": "limit",
    "limit-pdf": "limit",
    "limit-redirects": "limit",
    "limit-container": "limit",
}

# Signals that force at least the "tag" action whatever the score: a message arriving with our
# own X-Popproxy-* headers is trying to pass off a forged verdict, and only the tag path
# replaces those headers (pass is relayed unchanged, so the forgery would reach the reader).
# An exhausted limit means part of the message went unjudged: with thresholds raised above the
# limit weight, the reader must still be told.
_FORCE_TAG: frozenset[str] = frozenset(
    {"spoofed-verdict-header", "limit-depth", "limit-parts", "limit-decoded", "limit-links",
     "limit-text", "limit-size", "limit-html", "limit-structure", "limit-image",
     "limit-pdf", "limit-redirects", "limit-container"}
)
# Signals that force at least "defang": part of the message could not be read at all (its
# structure was not parsed), so its links must not stay live whatever the rest scored.
_FORCE_DEFANG: frozenset[str] = frozenset({"limit-structure"})


def group_of(name: str) -> str:
    """The group a rule counts in (its own name when it shares a group with no other rule)."""
    return _GROUPS.get(name, name)


def forces_tag(name: str) -> bool:
    """True for a rule that makes the action at least "tag" whatever the score."""
    return name in _FORCE_TAG


_ORDER: tuple[Action, ...] = ("pass", "tag", "defang", "quarantine")


def forced_action(action: Action, names: Iterable[str]) -> Action:
    """``action`` raised to what the signals named force: "tag" for the _FORCE_TAG ones,
    "defang" for the _FORCE_DEFANG ones (whichever combiner computed the score)."""
    present = set(names)
    floor: Action = "pass"
    if present & _FORCE_TAG:
        floor = "tag"
    if present & _FORCE_DEFANG:
        floor = "defang"
    if action in _ORDER and _ORDER.index(action) < _ORDER.index(floor):
        return floor
    return action


def combine(signals: Iterable[Signal], thresholds: Thresholds) -> Verdict:
    """Build the verdict: strongest signal per group, summed, mapped to an action.

    Returns:
        A verdict whose ``signals`` holds one signal per rule name, strongest first, and whose
        ``reasons`` are the counted signals' reasons in the same order.
    """
    per_name: dict[str, Signal] = {}
    for sig in signals:
        per_name.setdefault(sig.name, sig)
    ordered = sorted(per_name.values(), key=lambda s: (-s.weight, s.name))
    counted: dict[str, Signal] = {}
    for sig in ordered:
        counted.setdefault(_GROUPS.get(sig.name, sig.name), sig)
    score = round(sum(s.weight for s in counted.values()), 2)
    action = forced_action(thresholds.action_for(score), per_name)
    return Verdict(
        action=action,
        score=score,
        reasons=tuple(s.reason() for s in counted.values()),
        signals=tuple(ordered),
    )
