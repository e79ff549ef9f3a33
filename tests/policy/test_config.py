"""Policy: YAML -> schema -> frozen objects; every error names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from popproxy.policy import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_default_policy_loads() -> None:
    config = load_config(REPO / "policies" / "default.yaml")
    assert {lst.mode for lst in config.listeners} == {"starttls", "tls"}
    assert config.upstream.verify is True
    assert config.limits.idle_timeout >= 600


def test_config_is_frozen() -> None:
    config = load_config(REPO / "policies" / "default.yaml")
    with pytest.raises(ValidationError):
        config.limits.max_sessions = 1  # type: ignore[misc]


def test_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners:\n  - name: a\n    port: 70000\n    mode: tls\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.details == [
        f"{path}:3: listeners.0.port: Input should be less than or equal to 65535 (got 70000)"
    ]


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners:\n  - {name: a, port: 1995, mode: tls}\nupstrem: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.details == [f"{path}:3: upstrem: unknown key, did you mean 'upstream'?"]


def test_plain_listener_needs_explicit_consent(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners:\n  - name: a\n    port: 110\n    mode: plain\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (detail,) = info.value.details
    assert detail.startswith(f"{path}:2: listeners.0: a plain listener")
    ok = _write(tmp_path, "listeners:\n  - {name: a, port: 110, mode: plain, "
                          "allow_plaintext_login: true}\n")
    assert load_config(ok).listeners[0].allow_plaintext_login is True


def test_idle_timeout_below_rfc_minimum_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners: [{name: a, port: 1995, mode: tls}]\n"
                            "limits:\n  idle_timeout: 30\n")
    with pytest.raises(ConfigError, match=r":3: limits.idle_timeout: Input should be greater"):
        load_config(path)


def test_duplicate_listener_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners:\n  - {name: a, port: 1, mode: tls}\n"
                            "  - {name: a, port: 2, mode: tls}\n")
    with pytest.raises(ConfigError, match=r":3: listeners.1.name: listener name 'a' already"):
        load_config(path)


def test_malformed_yaml_reports_position(tmp_path: Path) -> None:
    path = _write(tmp_path, "listeners:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"policy.yaml:3:1: invalid YAML: expected"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":1: the top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_cli_check_config_and_version(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "popproxy", "check-config",
                         str(REPO / "policies" / "default.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0
    assert ": OK (default.yaml) listeners: pop3-starttls=" in ok.stdout
    bad = _write(tmp_path, "listeners: [{name: a, port: 0, mode: tls}]\n")
    result = subprocess.run([sys.executable, "-m", "popproxy", "check-config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{bad}:1: listeners.0.port" in result.stderr
    version = subprocess.run([sys.executable, "-m", "popproxy", "--version"],
                             capture_output=True, text=True)
    assert version.stdout.startswith("popproxy ")
