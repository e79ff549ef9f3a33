"""scan.redis_url, scan.evidence_ttl (and its deprecated name verdict_ttl): defaults, inheritance
from lockout.redis_url, checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.policy import ConfigError, Policy, load_config

LISTENER = "listeners:\n  - {name: a, port: 1995, mode: tls}\n"


def _load(tmp_path: Path, text: str) -> tuple[Path, Policy]:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + text)
    return path, load_config(path)


def test_without_redis_verdicts_stay_per_instance(tmp_path: Path) -> None:
    _, config = _load(tmp_path, "")
    assert config.scan.redis_url is None
    assert config.scan.verdict_ttl is None
    assert config.scan.cache_ttl == config.scan.evidence_ttl == 180 * 86400


def test_verdicts_use_the_lockout_redis_when_the_scan_section_names_none(
        tmp_path: Path) -> None:
    url = "redis://:secret@10.0.7.30:6379/0"
    _, absent = _load(tmp_path, f"lockout: {{redis_url: '{url}'}}\n")
    _, present = _load(tmp_path, f"lockout: {{redis_url: '{url}'}}\nscan: {{enabled: true}}\n")
    assert absent.scan.redis_url == present.scan.redis_url == url


def test_an_own_verdict_redis_wins(tmp_path: Path) -> None:
    _, config = _load(tmp_path, "lockout: {redis_url: 'redis://10.0.7.30/0'}\n"
                                "scan: {redis_url: 'unix:///run/redis/verdicts.sock?db=1', "
                                "verdict_ttl: 172800}\n")
    assert config.scan.redis_url == "unix:///run/redis/verdicts.sock?db=1"
    assert config.lockout.redis_url == "redis://10.0.7.30/0"
    assert config.scan.cache_ttl == 172800


@pytest.mark.parametrize("section", ["scan", "lockout"])
@pytest.mark.parametrize("url", ["10.0.7.30:6379", "http://10.0.7.30:6379/0", "redis:/x", ""])
def test_a_url_that_is_not_redis_is_refused_with_file_line_and_key(
        tmp_path: Path, section: str, url: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + f"{section}:\n  redis_url: '{url}'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (detail,) = info.value.details
    assert detail.startswith(f"{path}:4: {section}.redis_url: must be a Redis URL "
                             "starting with redis:// (plain), rediss:// (TLS) or unix://")


def test_verdict_ttl_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + "scan:\n  verdict_ttl: 10\n")
    with pytest.raises(ConfigError, match=r":4: scan.verdict_ttl: Input should be greater"):
        load_config(path)


def test_the_deprecated_verdict_ttl_still_loads_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, config = _load(tmp_path, "scan:\n  verdict_ttl: 604800\n")
    assert config.scan.cache_ttl == 604800  # what the admin wrote is honoured
    assert "scan.verdict_ttl is deprecated: rename it scan.evidence_ttl" in caplog.text


def test_evidence_ttl_and_its_old_name_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + "scan:\n  evidence_ttl: 86400\n  verdict_ttl: 604800\n")
    with pytest.raises(ConfigError, match=r"set scan.evidence_ttl only"):
        load_config(path)


def test_evidence_ttl_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(LISTENER + "scan:\n  evidence_ttl: 200000000\n")
    with pytest.raises(ConfigError, match=r":4: scan.evidence_ttl: Input should be less"):
        load_config(path)
