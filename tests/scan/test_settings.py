"""Scanner settings: thresholds mapped to actions, the brand tables, limits as defaults."""

from __future__ import annotations

import re

from popproxy.scan import limits
from popproxy.scan.settings import (
    DEFAULT_PROTECTED_BRANDS,
    DEFAULT_SENDER_BRANDS,
    ScanSettings,
    Thresholds,
)


def test_thresholds_map_to_actions() -> None:
    t = Thresholds(tag=4, defang=7, quarantine=10)
    assert [t.action_for(s) for s in (0, 3.9, 4, 6.9, 7, 9.9, 10, 50)] == [
        "pass", "pass", "tag", "tag", "defang", "defang", "quarantine", "quarantine",
    ]


def test_brand_labels_are_lower_case_labels_and_unique() -> None:
    for table in (DEFAULT_PROTECTED_BRANDS, DEFAULT_SENDER_BRANDS):
        names = [brand.name for brand in table]
        assert len(names) == len(set(names))
        assert all(re.fullmatch(r"[a-z0-9]+", name) for name in names), names
        for brand in table:
            assert all(d == d.lower() and "." in d for d in brand.domains), brand.name
            assert all(a == a.lower() for a in brand.aliases), brand.name


def test_defaults_are_the_named_limits() -> None:
    config = ScanSettings()
    assert config.max_message_bytes == limits.MAX_MESSAGE_BYTES
    assert config.max_links == limits.MAX_LINKS
    assert config.time_budget_seconds == limits.TIME_BUDGET_SECONDS
    assert config.thresholds == Thresholds()
    assert config.combiner == "model" and config.model_path is None
