"""The verdict generation: which settings a cached verdict was judged under, in two parts.

A cached verdict is used as it is only under the generation it was judged with.  The generation
is ``"<message part>-<evidence part>"`` (12 hex digits each):

- **message part**: what needs the message itself to judge again, because the evidence or the
  rendered bytes (and so the size the client is told) may change: the scanner's limits and
  parsing settings (``max_message_bytes``, ``time_budget``), what rendering writes
  (``subject_prefix``, ``notice_from``, ``RENDER_VERSION``), the features' meaning
  (``FEATURES_VERSION``) and the evidence format.  A change re-downloads every message.
- **evidence part**: what re-scoring the cached evidence follows without the message
  (:mod:`popproxy.scan.evidence`): the feeds (their contents), the weights table, the combiner
  and its model version, the thresholds and the fail mode.  A change re-scores; only a message
  whose action changes is downloaded again.

``redis_url`` (and ``redis_sentinel``, ``redis_cluster``), the TTLs, ``quarantine_dir``,
``workers`` and ``listing_budget`` are in neither: they do not change what a client receives,
so instances that differ only there share verdicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from popproxy.scan.features import FEATURES_VERSION
from popproxy.scan.weights import WEIGHTS

# Settings that do not change what a client receives (see the module docstring).
NOT_IN_GENERATION = frozenset({"redis_url", "redis_sentinel", "redis_cluster", "verdict_ttl",
                               "evidence_ttl", "quarantine_dir", "workers", "listing_budget",
                               "quarantine_retention"})
# Settings re-scoring follows from the cached evidence, without the message.
EVIDENCE_ONLY = frozenset({"thresholds", "combiner", "feeds", "fail_mode", "fail_open_action"})
# Bumped when popproxy.scan.evidence stores something else: older evidence is judged again.
EVIDENCE_FORMAT = 1
# Hex digits of each part's hash: 48 bits, collisions between two settings a site ever uses
# are not a concern.
PART_DIGITS = 12


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:PART_DIGITS]


def settings_parts(settings: Mapping[str, Any], render_version: int,
                   model_version: str | None) -> tuple[str, str]:
    """(message part, evidence settings digest) of the policy's ``scan`` section (JSON form).
    The feeds' contents are added per listing by :func:`compose`."""
    message = {k: v for k, v in settings.items()
               if k not in NOT_IN_GENERATION and k not in EVIDENCE_ONLY}
    message.update(render_version=render_version, features_version=FEATURES_VERSION,
                   evidence_format=EVIDENCE_FORMAT)
    evidence = {k: v for k, v in settings.items() if k in EVIDENCE_ONLY}
    # A feed counts by its content (compose), not by where it lies: paths are absolute since
    # issue 19 item 5 (relative to each policy's directory), and two hosts holding the same
    # feed in different places must share verdicts.  How many feeds there are stays in.
    evidence["feeds"] = len(settings.get("feeds") or ())
    evidence.update(scan_model=model_version, weights=WEIGHTS)
    return _digest(message), _digest(evidence)


def compose(message_part: str, evidence_settings: str, feed_identities: list[str]) -> str:
    """The generation string, from the settings parts and each feed's content identity."""
    return f"{message_part}-{_digest([evidence_settings, *feed_identities])}"


def split_generation(generation: str) -> tuple[str, str]:
    """``(message part, evidence part)`` of a generation.  A generation of an older version
    has no ``-``: its message part matches nothing, so such verdicts are judged again once."""
    message, sep, evidence = generation.partition("-")
    return (message, evidence) if sep else ("", generation)


def same_message_generation(a: str, b: str) -> bool:
    """Whether a verdict of generation ``a`` can be re-scored for generation ``b``."""
    message = split_generation(a)[0]  # once per cached message of a listing: computed once
    return bool(message) and message == split_generation(b)[0]
