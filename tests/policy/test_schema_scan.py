"""The policy's scan section: its defaults are the scanner's named constants, declared once."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from popproxy.policy import ConfigError, load_config, schema_scan
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


@pytest.mark.parametrize(("key", "value", "says"), [
    ("subject_prefix", "[X]\r\nBcc: someone@example.com", "printable ASCII"),
    ("subject_prefix", "[SPÄM]", "printable ASCII"),
    ("notice_from", "postmaster@example.com\nReply-To: x@example.com", "one line"),
    ("notice_from", " ", "one line"),
])
def test_header_text_is_one_line_as_a_header_takes_it(tmp_path: Path, key: str, value: str,
                                                      says: str) -> None:
    """Regression: the Subject prefix was written into the header as ASCII with "?" for what
    is not, and a line break in it or in notice_from would start a header of its own (or fail
    each quarantine notice).  The policy says so at load, with file, line and key."""
    path = tmp_path / "policy.yaml"
    path.write_text("listeners: [{name: a, port: 1995, mode: tls}]\n"
                    f"scan:\n  {key}: {json.dumps(value)}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (detail,) = info.value.details
    assert detail.startswith(f"{path}:3: scan.{key}: ") and says in detail


def test_a_name_and_address_are_a_notice_from() -> None:
    scan = Scan(notice_from="Help Désk <helpdesk@example.com>", subject_prefix="[!] ")
    assert scan.notice_from.startswith("Help Désk")
