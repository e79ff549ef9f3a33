"""Signals -> score -> verdict: each rule once, one per group, forced floors for limits."""

from __future__ import annotations

import pytest

from popproxy.scan.scoring import combine, forced_action, forces_tag, group_of
from popproxy.scan.settings import Thresholds
from popproxy.scan.verdict import Signal
from popproxy.scan.weights import WEIGHTS

THRESHOLDS = Thresholds(tag=4.0, defang=7.0, quarantine=10.0)


def sig(name: str, weight: float, detail: str = "") -> Signal:
    return Signal(name=name, weight=weight, detail=detail)


def test_no_signals_pass_with_zero() -> None:
    verdict = combine([], THRESHOLDS)
    assert (verdict.action, verdict.score, verdict.reasons) == ("pass", 0.0, ())


def test_a_rule_counts_once_whatever_its_detail() -> None:
    verdict = combine([sig("link-ip-host", 3.0, "198.51.100.7"),
                       sig("link-ip-host", 3.0, "203.0.113.9")], THRESHOLDS)
    assert verdict.score == 3.0
    assert verdict.reasons == ("link-ip-host (198.51.100.7)",)  # the first one seen


def test_only_the_strongest_of_a_group_counts() -> None:
    verdict = combine([sig("link-ip-host", 3.0), sig("link-ip-obfuscated", 5.0),
                       sig("attach-risky-ext", 6.0)], THRESHOLDS)
    assert verdict.score == 11.0
    assert verdict.action == "quarantine"
    assert verdict.reasons == ("attach-risky-ext", "link-ip-obfuscated")
    # every rule stays in ``signals`` (for --explain), strongest first
    assert [s.name for s in verdict.signals] == ["attach-risky-ext", "link-ip-obfuscated",
                                                 "link-ip-host"]


def test_the_score_is_rounded_to_hundredths() -> None:
    verdict = combine([sig("a", 0.1), sig("b", 0.2)], THRESHOLDS)
    assert verdict.score == 0.3


@pytest.mark.parametrize(("names", "action", "expected"), [
    ((), "pass", "pass"),
    (("spoofed-verdict-header",), "pass", "tag"),
    (("limit-links",), "pass", "tag"),
    (("limit-structure",), "tag", "defang"),
    (("limit-structure",), "quarantine", "quarantine"),  # a floor, never lowered
    (("limit-parts",), "unscanned", "unscanned"),
])
def test_forced_action_is_a_floor(names: tuple[str, ...], action: str, expected: str) -> None:
    assert forced_action(action, names) == expected  # type: ignore[arg-type]


def test_a_limit_signal_tags_even_under_raised_thresholds() -> None:
    raised = Thresholds(tag=50.0, defang=60.0, quarantine=70.0)
    assert combine([sig("limit-depth", 4.0)], raised).action == "tag"


def test_groups_and_forcing_name_only_known_rules() -> None:
    assert group_of("limit-depth") == group_of("limit-parts") == "limit"
    assert group_of("no-such-rule") == "no-such-rule"
    assert forces_tag("spoofed-verdict-header") and not forces_tag("link-ip-host")
    grouped = [name for name in WEIGHTS if group_of(name) != name]
    assert "link-feed-domain" in grouped
