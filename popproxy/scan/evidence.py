"""What a verdict was reached from, kept with it so it can be re-scored without the message.

A scan turns a message into signals and a feature vector, then scores them.  Only the feed
look-ups, the weights, the combiner and the thresholds can change without the message changing,
so the cache keeps (docs/scanning.md, "Re-scoring from evidence"):

- the signals that do not come from a feed, as (name, detail): their weight is looked up again
  in the current table;
- the link hosts the feed look-up used (lower-case ASCII, in the scanner's order), so a new
  feed gives the ``link-feed-*`` signal a new scan would;
- the model's features other than the ``sig:*`` ones (rebuilt from the signals).

Re-scoring this with unchanged feeds, weights, model and thresholds gives the scan's own score
and action (tests/scan/test_evidence.py checks it on corpus messages).

Bounded: past :data:`MAX_EVIDENCE_BYTES` the strongest part is kept and the evidence marked
``truncated``.  Truncated evidence is never re-scored (a dropped host might be listed now), so
hitting the bound can only make a message be downloaded and judged again, never look cleaner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from popproxy.scan.extract import Link
from popproxy.scan.features import SIGNAL_PREFIX
from popproxy.scan.feeds import HostFeed
from popproxy.scan.link_rules import feed_hosts, feed_signal
from popproxy.scan.model import Model, model_combine
from popproxy.scan.scoring import combine
from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Signal, Verdict
from popproxy.scan.weights import WEIGHTS, weight

# Bytes of evidence (its compact JSON) kept per cached verdict.  Measured on the corpus
# (bench/evidence_size.py, docs/scaling.md): a median message needs about 200, and 1,536 keeps
# 99 % of ham-modern whole; the rest is re-judged from the message after a feed change.
MAX_EVIDENCE_BYTES = 1536
# A host name is at most 253 characters (RFC 1035 section 2.3.4); longer is not ours.
MAX_HOST_CHARS = 253
FEED_SIGNAL_PREFIX = "link-feed-"


@dataclass(frozen=True, slots=True)
class Evidence:
    """The re-scorable inputs of one verdict (see the module docstring)."""

    signals: tuple[tuple[str, str], ...] = ()
    hosts: tuple[str, ...] = ()
    features: Mapping[str, float] = field(default_factory=dict)
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        """The compact stored form (cache file line, Redis value)."""
        out: dict[str, Any] = {"s": [list(pair) for pair in self.signals], "h": list(self.hosts),
                               "f": {k: round(v, 4) for k, v in self.features.items()}}
        if self.truncated:
            out["t"] = 1
        return out

    @classmethod
    def from_json(cls, data: object) -> Evidence:
        """Raises ValueError, KeyError or TypeError for anything that is not evidence: it comes
        from a worker that parsed hostile mail, or from Redis."""
        if not isinstance(data, dict):
            raise TypeError("not evidence")
        signals = tuple((_known(n), _text(d)) for n, d in data["s"])
        hosts = tuple(_text(h, MAX_HOST_CHARS) for h in data["h"])
        features = {_text(k): float(v) for k, v in data["f"].items()}
        if not all(math.isfinite(v) for v in features.values()):
            raise ValueError("non-finite feature")
        return cls(signals, hosts, features, bool(data.get("t", 0)))

    def size(self) -> int:
        """Octets of the stored form."""
        return len(json.dumps(self.to_json(), separators=(",", ":")))


def _known(name: object) -> str:
    """A signal name the weights table knows (they become metric labels and reasons)."""
    if not isinstance(name, str) or name not in WEIGHTS:
        raise ValueError("not a signal")
    return name


def _text(value: object, limit: int = 300) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError("not a short string")
    return value


def collect(signals: Sequence[Signal], links: Sequence[Link], vector: Mapping[str, float],
            max_links: int) -> Evidence:
    """The evidence of one scan: its signals (feed hits left out: they are looked up again),
    the hosts the feed look-up used, the non-signal features; bounded."""
    kept: dict[str, str] = {}
    for sig in sorted(signals, key=lambda s: -s.weight):  # strongest first, as scoring keeps
        if not sig.name.startswith(FEED_SIGNAL_PREFIX):
            kept.setdefault(sig.name, sig.detail)
    features = {k: v for k, v in vector.items() if not k.startswith(SIGNAL_PREFIX)}
    hosts = [h for h in feed_hosts(links, max_links) if len(h) <= MAX_HOST_CHARS]
    return bound(Evidence(tuple(kept.items()), tuple(hosts), features))


def bound(evidence: Evidence) -> Evidence:
    """``evidence`` within MAX_EVIDENCE_BYTES: hosts dropped from the end (the link selection
    puts clickable body links first), then the weakest signals, then the features."""
    if evidence.size() <= MAX_EVIDENCE_BYTES:
        return evidence
    budget = MAX_EVIDENCE_BYTES - Evidence(evidence.signals, (), evidence.features).size()
    hosts: list[str] = []
    for host in evidence.hosts:
        budget -= len(host) + 3  # quotes and comma
        if budget < 0:
            break
        hosts.append(host)
    cut = Evidence(evidence.signals, tuple(hosts), evidence.features, truncated=True)
    signals = list(evidence.signals)
    while cut.size() > MAX_EVIDENCE_BYTES and signals:
        signals.pop()
        cut = Evidence(tuple(signals), cut.hosts, cut.features, truncated=True)
    if cut.size() > MAX_EVIDENCE_BYTES:
        cut = Evidence(cut.signals, cut.hosts, {}, truncated=True)
    return cut


def rescore(evidence: Evidence, feeds: Sequence[HostFeed], model: Model | None,
            thresholds: Thresholds) -> Verdict:
    """The verdict a scan would give now: current feeds, weights, combiner and thresholds.

    Raises ValueError for truncated evidence: it cannot show what was left out.
    """
    if evidence.truncated:
        raise ValueError("truncated evidence is judged from the message")
    signals = [Signal(name=n, weight=weight(n), detail=d) for n, d in evidence.signals]
    for host in evidence.hosts:
        hit = feed_signal(host, feeds)
        if hit is not None:
            signals.append(hit)
    if model is None:
        return combine(signals, thresholds)
    vector = dict(evidence.features)
    vector.update({SIGNAL_PREFIX + s.name: 1.0 for s in signals})
    return model_combine(signals, vector, model, thresholds)
