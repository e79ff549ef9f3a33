"""The trained combiner: a logistic model over :mod:`.features`, evaluated in pure Python.

``bench/train_scanner.py`` fits it on the older part of the corpus and writes ``model.json``
next to this file: plain JSON (an intercept and one coefficient per feature), loaded once at
start-up; no training library is needed at run time.

The score keeps the weights table's scale.  The training script shifts the intercept so that the
operating point it chose (false positives within the target on held-out ham) lands on the
default tag threshold, 4; the score is that point plus the model's log-odds above it.  So
``scan.thresholds`` keep their meaning: defang at 7 is odds 20 times the tag point's (e^3),
quarantine at 10 about 400 times.  The verdict's score is the larger of this and the weights
table's: the readable table is a floor, the model adds what it misses.  Signals the model was
not trained on (the blocklist feed, whose snapshot postdates the corpus, and signals added since
the last training) count with their weights-table weight, strongest per group, as in
:func:`.scoring.combine`.  Signals in
:data:`.scoring._FORCE_TAG` still force at least "tag".

A missing, unreadable or incompatible model file is not fatal: the scanner logs it and uses the
weights table (:func:`load_for`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from popproxy.scan.features import FEATURES_VERSION, SIGNAL_PREFIX
from popproxy.scan.scoring import combine, forced_action, group_of
from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Signal, Verdict

log = logging.getLogger(__name__)

MODEL_FORMAT = "popproxy-scan-model"
# Bumped when the file's layout changes; files of another version are refused.
MODEL_FORMAT_VERSION = 1
PACKAGED_MODEL = Path(__file__).with_name("model.json")
# A model file is a few kilobytes; anything much larger is not one of ours.
MAX_MODEL_BYTES = 1 << 20


class ModelError(ValueError):
    """The model file is missing, malformed or made for another feature version."""


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted logistic model on the score scale (see the module docstring)."""

    version: str
    intercept: float
    coefficients: Mapping[str, float]
    # Each feature's largest training value: larger values count as that (bounds what padding
    # can do to a feature with a negative coefficient; see bench/train_scanner.py).
    clip: Mapping[str, float]
    # The score the training operating point maps to, and that point's log-odds.
    operating_score: float
    operating_logit: float

    def raw_score(self, features: Mapping[str, float]) -> float:
        """Intercept plus the weighted features (the trained signals included)."""
        total = self.intercept
        for name, value in features.items():
            coefficient = self.coefficients.get(name)
            if coefficient:
                total += coefficient * min(value, self.clip.get(name, value))
        return total

    def probability(self, score: float) -> float:
        """The model's probability of phishing for a score on its scale."""
        z = score - self.operating_score + self.operating_logit
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def trained(self, signal_name: str) -> bool:
        """Whether the model has a coefficient for this signal."""
        return SIGNAL_PREFIX + signal_name in self.coefficients

    def contributions(self, features: Mapping[str, float]) -> list[tuple[str, float]]:
        """Each non-zero feature's share of the score, largest magnitude first."""
        parts = [
            (name, self.coefficients[name] * min(value, self.clip.get(name, value)))
            for name, value in features.items()
            if self.coefficients.get(name)
        ]
        return sorted(parts, key=lambda item: (-abs(item[1]), item[0]))


def parse_model(data: object) -> Model:
    """A model from the decoded JSON; ModelError when it is not one this code can evaluate."""
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ModelError("not a popproxy scan model")
    if data.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelError(f"model format version {data.get('format_version')!r} unsupported")
    if data.get("features_version") != FEATURES_VERSION:
        raise ModelError(
            f"model trained on features version {data.get('features_version')!r}, "
            f"scanner computes version {FEATURES_VERSION}: retrain (bench/train_scanner.py)"
        )
    try:
        coefficients = {str(k): float(v) for k, v in data["coefficients"].items()}
        clip = {str(k): float(v) for k, v in data.get("clip", {}).items()}
        point = data["operating_point"]
        model = Model(
            version=str(data["model_version"]),
            intercept=float(data["intercept"]),
            coefficients=coefficients,
            clip=clip,
            operating_score=float(point["score"]),
            operating_logit=float(point["logit"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"malformed model: {exc!r}") from exc
    if not all(map(math.isfinite, (model.intercept, *coefficients.values(), *clip.values()))):
        raise ModelError("model has non-finite numbers")
    return model


def load_model(path: Path) -> Model:
    """Read and check a model file; ModelError when unusable."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > MAX_MODEL_BYTES:
        raise ModelError(f"{path} is larger than {MAX_MODEL_BYTES} bytes")
    try:
        return parse_model(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not JSON") from exc


@lru_cache(maxsize=4)
def load_for(path: Path | None) -> Model | None:
    """The model at ``path`` (the packaged one for None), or None (logged) to use the weights."""
    target = path if path is not None else PACKAGED_MODEL
    try:
        return load_model(target)
    except ModelError as exc:
        log.warning("scan model not used, falling back to the weights table: %s", exc)
        return None


def model_combine(
    signals: Iterable[Signal],
    features: Mapping[str, float],
    model: Model,
    thresholds: Thresholds,
) -> Verdict:
    """The verdict with the model's score; signals and reasons as the weights table orders them."""
    base = combine(signals, thresholds)
    learned = model.raw_score(features) + untrained_weight(base.signals, model)
    # The table is a floor: the model adds what the table misses, it never clears what the
    # table flags (a lure the corpus happens to underweight still tags).
    score = round(max(base.score, learned, 0.0), 2)
    action = forced_action(thresholds.action_for(score), (s.name for s in base.signals))
    return dataclasses.replace(base, score=score, action=action)


def untrained_weight(signals: Iterable[Signal], model: Model) -> float:
    """Table weight of the signals the model has no coefficient for, strongest per group."""
    strongest: dict[str, float] = {}
    for sig in signals:
        if not model.trained(sig.name):
            group = group_of(sig.name)
            strongest[group] = max(strongest.get(group, 0.0), sig.weight)
    return sum(strongest.values())
