"""The policy's scan section: its defaults are the scanner's named constants, declared once."""

from __future__ import annotations

import ast
from pathlib import Path

from popproxy.policy import schema_scan
from popproxy.policy.schema_scan import Scan, ScanThresholds
from popproxy.scan import limits
from popproxy.scan.settings import (
    DEFANG_SCORE,
    DEFAULT_NOTICE_FROM,
    DEFAULT_SUBJECT_PREFIX,
    QUARANTINE_SCORE,
    TAG_SCORE,
    ScanSettings,
    Thresholds,
)

# Fields that mirror a ScanSettings default: their schema default must name the constant.
MIRRORED = {"tag", "defang", "quarantine", "subject_prefix", "max_message_bytes", "time_budget",
            "notice_from"}


def test_defaults_convert_to_the_scanners_defaults() -> None:
    # What admins get from an empty ``scan:`` section is what ``popproxy scan`` uses.
    assert Scan().to_settings() == ScanSettings()


def test_defaults_are_the_named_constants() -> None:
    scan, thresholds = Scan(), ScanThresholds()
    assert (thresholds.tag, thresholds.defang, thresholds.quarantine) == (
        TAG_SCORE, DEFANG_SCORE, QUARANTINE_SCORE)
    assert scan.max_message_bytes == limits.MAX_MESSAGE_BYTES == 16 * 1024 * 1024
    assert scan.time_budget == limits.TIME_BUDGET_SECONDS
    assert scan.subject_prefix == DEFAULT_SUBJECT_PREFIX
    assert scan.notice_from == DEFAULT_NOTICE_FROM


def test_no_mirrored_default_is_a_literal() -> None:
    """Equal values are not enough: a literal re-declared here would drift from the constant."""
    tree = ast.parse(Path(schema_scan.__file__).read_text(encoding="utf-8"))
    seen = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id in MIRRORED):
            seen.add(node.target.id)
            assert node.value is not None, node.target.id
            assert isinstance(node.value, ast.Attribute), (
                f"{node.target.id}: use the named constant, not {ast.unparse(node.value)!r}")
    assert seen == MIRRORED


def test_conversion_carries_every_setting() -> None:
    scan = Scan(thresholds=ScanThresholds(tag=1, defang=2, quarantine=3), combiner="weights",
                feeds=(Path("/feeds/a"),), subject_prefix="[X]", max_message_bytes=2048,
                time_budget=1.5, notice_from="pm <pm@example.org>")
    assert scan.to_settings() == ScanSettings(
        thresholds=Thresholds(1, 2, 3), combiner="weights", feed_paths=(Path("/feeds/a"),),
        subject_prefix="[X]", max_message_bytes=2048, time_budget_seconds=1.5,
        notice_from="pm <pm@example.org>")
