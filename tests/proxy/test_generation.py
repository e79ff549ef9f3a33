"""The two-part verdict generation: which settings need the message, which only the evidence."""

from __future__ import annotations

from typing import Any

import pytest

from popproxy.policy import Scan
from popproxy.proxy.generation import (
    EVIDENCE_ONLY,
    NOT_IN_GENERATION,
    compose,
    same_message_generation,
    settings_parts,
    split_generation,
)


def _parts(**settings: Any) -> tuple[str, str]:
    return settings_parts(Scan(**settings).model_dump(mode="json"), 3, "model-1")


@pytest.mark.parametrize("change", [
    {"thresholds": {"tag": 3}}, {"combiner": "weights"}, {"feeds": ["/etc/popproxy/f.txt"]},
    {"fail_mode": "closed"}, {"fail_open_action": "tag"},
])
def test_evidence_only_settings_change_the_evidence_part_alone(change: dict[str, Any]) -> None:
    base, changed = _parts(), _parts(**change)
    assert changed[0] == base[0] and changed[1] != base[1]


@pytest.mark.parametrize("change", [
    {"subject_prefix": "[CHECK]"}, {"max_message_bytes": 4096}, {"time_budget": 2},
    {"notice_from": "admin <a@b.example>"}, {"enabled": False},
])
def test_settings_that_need_the_message_change_the_message_part(change: dict[str, Any]) -> None:
    assert _parts(**change)[0] != _parts()[0]


@pytest.mark.parametrize("change", [
    {"redis_url": "redis://10.0.7.31/0"}, {"evidence_ttl": 86400}, {"verdict_ttl": 120},
    {"workers": 3}, {"quarantine_dir": "/srv/q"},
])
def test_settings_that_change_nothing_a_client_sees_are_in_neither(
        change: dict[str, Any]) -> None:
    assert _parts(**change) == _parts()


def test_a_feed_counts_by_its_content_not_its_path() -> None:
    """Relative paths are made absolute per policy directory (issue 19 item 5): the same
    feed at another place on another host must give the same generation."""
    assert _parts(feeds=["/srv/a/policy/f.txt"]) == _parts(feeds=["/srv/b/policy/f.txt"])
    assert _parts(feeds=["/f.txt"]) != _parts(feeds=["/f.txt", "/g.txt"])


def test_every_scan_setting_is_classified() -> None:
    """A new setting lands in the message part unless listed: the safe side (re-download)."""
    assert set(Scan.model_fields) >= EVIDENCE_ONLY | NOT_IN_GENERATION


def test_a_new_render_or_model_version() -> None:
    dump = Scan().model_dump(mode="json")
    assert settings_parts(dump, 4, "model-1")[0] != settings_parts(dump, 3, "model-1")[0]
    assert settings_parts(dump, 3, "model-2")[0] == settings_parts(dump, 3, "model-1")[0]
    assert settings_parts(dump, 3, "model-2")[1] != settings_parts(dump, 3, "model-1")[1]


def test_feed_contents_change_the_evidence_part() -> None:
    message, evidence = _parts()
    one, two = compose(message, evidence, ["abc"]), compose(message, evidence, ["abd"])
    assert one != two and same_message_generation(one, two)
    assert split_generation(one)[0] == message


def test_an_older_versions_generation_is_never_rescored() -> None:
    current = compose(*_parts(), [])
    assert split_generation("0123456789abcdef0123") == ("", "0123456789abcdef0123")
    assert not same_message_generation("0123456789abcdef0123", current)
    assert not same_message_generation("", "")
