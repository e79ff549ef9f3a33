"""Durations in the policy and on the command line read the same way."""

from __future__ import annotations

import pytest

from popproxy.policy.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400), ("12h", 43200), ("15m", 900), ("90s", 90), ("2w", 14 * 86400),
    ("3600", 3600), (" 1.5h ", 5400), ("7D", 7 * 86400),
])
def test_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "30 days", "-1d", "1y", "1h30m"])
def test_refused_with_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration: a number with s, m, h, d or w"):
        parse_duration(text)
