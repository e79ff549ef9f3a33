"""Relative paths in a policy are relative to the policy's directory (issue 19 item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from popproxy.policy import load_config
from popproxy.policy.paths import policy_base, rebase

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
listeners: [{name: a, port: 1995, mode: tls}]
state_dir: state
tls:
  certificates: [{cert: tls/a.crt, key: tls/a.key}, {cert: /etc/abs.crt, key: ../up.key}]
upstream: {ca_file: ca.pem, warm_login: {master_user: m, password_file: secrets/master}}
upstreams: {old: {ca_file: old-ca.pem}}
lockout: {secret_file: lockout.key}
scan: {feeds: [feeds/phish.txt], quarantine_dir: q}
observability: {audit_log: log/audit.log}
"""


def _check(config_dir: Path, policy_path: Path) -> None:
    config = load_config(policy_path)
    assert config.state_dir == config_dir / "state"
    first, second = config.tls.certificates
    assert (first.cert, first.key) == (config_dir / "tls/a.crt", config_dir / "tls/a.key")
    assert second.cert == Path("/etc/abs.crt")  # absolute paths stay as written
    assert second.key == config_dir / "../up.key"
    assert config.upstream.ca_file == config_dir / "ca.pem"
    assert config.upstream.warm_login is not None
    assert config.upstream.warm_login.password_file == config_dir / "secrets/master"
    assert config.upstreams["old"].ca_file == config_dir / "old-ca.pem"
    assert config.lockout.secret_file == config_dir / "lockout.key"
    assert config.scan.feeds == (config_dir / "feeds/phish.txt",)
    assert config.scan.quarantine_dir == config_dir / "q"
    assert config.observability.audit_log == str(config_dir / "log/audit.log")


def test_every_relative_path_is_relative_to_the_policy_file_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "policy.yaml").write_text(POLICY)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _check(config_dir, config_dir / "policy.yaml")
    monkeypatch.chdir(config_dir)  # a relative policy path gives the same absolute paths
    _check(config_dir, Path("policy.yaml"))
    _check(config_dir, Path("."))  # a directory of policies: relative to that directory


def test_standard_error_and_absent_paths_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("listeners: [{name: a, port: 1995}]\n"
                                     "observability: {audit_log: '-'}\n")
    config = load_config(tmp_path / "p.yaml")
    assert config.observability.audit_log == "-"
    assert config.upstream.ca_file is None and config.scan.quarantine_dir is None
    assert rebase(config, tmp_path) is config  # nothing relative left: the same object


def test_policy_base_is_the_directory_or_the_files_parent(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("")
    assert policy_base(tmp_path) == tmp_path
    assert policy_base(tmp_path / "p.yaml") == tmp_path


def test_the_proxy_started_from_another_cwd_writes_state_beside_its_policy(
        tmp_path: Path) -> None:
    """`check-config --dump` from / prints the state_dir the proxy would use."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "policy.yaml").write_text("listeners: [{name: a, port: 1995}]\n"
                                            "state_dir: state\n")
    result = subprocess.run(
        [sys.executable, "-m", "popproxy", "check-config", "--dump", "etc/policy.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert f"state_dir: {config_dir / 'state'}\n" in result.stdout
