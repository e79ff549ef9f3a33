"""``popproxy check-config [--dump] [--no-files]`` and ``run``'s start-up check (issue 19 items
2 and 4): a bad file is one line naming key, file and fix; exit 1 (check) or 2 (run)."""

from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from popproxy.check_cli import check_one, startup_problem
from popproxy.policy import load_config
from tests.test_checks import NOW, write_pair

ROOT = Path(__file__).resolve().parents[1]


def _popproxy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "popproxy", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _policy(tmp_path: Path, certs: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("listeners: [{name: s, host: 127.0.0.1, port: 1, mode: tls}]\n"
                    f"tls: {{certificates: [{certs}]}}\n"
                    "lockout: {redis_url: 'redis://:hunter2@10.0.7.30:6379/0'}\n")
    return path


def test_run_with_a_missing_key_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    write_pair(tmp_path, "a", not_after=datetime.datetime.now(datetime.UTC)
               + datetime.timedelta(days=90))
    path = _policy(tmp_path, "{cert: a.crt, key: missing.key}")
    result = _popproxy("run", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"popproxy: cannot start: tls.certificates.0.key: "
                             f"{tmp_path}/missing.key: no such file; fix: create it or correct "
                             "the path (relative paths are relative to the policy's "
                             "directory)\n")
    checked = _popproxy("check-config", str(path), cwd=tmp_path)
    assert checked.returncode == 1
    assert checked.stderr.splitlines() == [
        f"{path}: INVALID", f"  tls.certificates.0.key: {tmp_path}/missing.key: no such file; "
        "fix: create it or correct the path (relative paths are relative to the policy's "
        "directory)"]
    assert _popproxy("check-config", "--no-files", str(path), cwd=tmp_path).returncode == 0


def test_run_with_several_problems_says_how_to_see_them_all(tmp_path: Path) -> None:
    config, problem = startup_problem(_policy(tmp_path, "{cert: x.crt, key: y.key}"))
    assert config is None
    assert problem.endswith(f" (+1 more: popproxy check-config {tmp_path}/policy.yaml)")


def test_a_world_readable_key_fails_check_config_but_only_warns_at_start(
        tmp_path: Path) -> None:
    _, key = write_pair(tmp_path, "a", not_after=NOW + datetime.timedelta(days=90))
    key.chmod(0o644)
    path = _policy(tmp_path, "{cert: a.crt, key: a.key}")
    err = io.StringIO()
    assert check_one(path, out=io.StringIO(), err=err, clock=lambda: NOW) == 1
    assert "mode 0644 lets every local user read the private key" in err.getvalue()
    config, problem = startup_problem(path)
    assert config is not None and problem == ""


def test_an_expiring_certificate_is_a_warning_and_still_ok(tmp_path: Path) -> None:
    write_pair(tmp_path, "a", not_after=NOW + datetime.timedelta(days=5))
    path = _policy(tmp_path, "{cert: a.crt, key: a.key}")
    out, err = io.StringIO(), io.StringIO()
    assert check_one(path, out=out, err=err, clock=lambda: NOW) == 0
    assert out.getvalue().startswith(f"{path}: OK (policy.yaml) listeners: s=127.0.0.1:1/tls")
    assert err.getvalue() == (f"{path}: WARNING tls.certificates.0.cert: {tmp_path}/a.crt: "
                              "expires on 2026-12-09 (5 days left); fix: renew it soon\n")


def test_dump_prints_the_effective_policy_with_defaults_and_no_password(
        tmp_path: Path) -> None:
    write_pair(tmp_path, "a", not_after=datetime.datetime.now(datetime.UTC)
               + datetime.timedelta(days=90))
    path = _policy(tmp_path, "{cert: a.crt, key: a.key}")
    result = _popproxy("check-config", "--dump", "policy.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# effective policy of policy.yaml (policy.yaml), "
                                    "defaults filled in\n")
    assert "hunter2" not in result.stdout
    dumped = yaml.safe_load(result.stdout)
    assert dumped["limits"]["shutdown_grace"] == 30.0  # a default, filled in
    assert dumped["tls"]["certificates"][0]["key"] == str(tmp_path / "a.key")
    assert dumped["lockout"]["redis_url"] == "redis://:REDACTED@10.0.7.30:6379/0"
    assert dumped["scan"]["redis_url"] == "redis://:REDACTED@10.0.7.30:6379/0"  # inherited
    # The dump is itself a policy that loads to the same thing (but for the password).
    again = tmp_path / "again.yaml"
    again.write_text(result.stdout)
    assert load_config(again).limits == load_config(path).limits


def test_the_default_policy_path_missing_says_to_give_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: outside the checkout, ``popproxy explain`` / ``check-config`` with no
    --config said "policies: policies: cannot read" with no word on what to do."""
    from popproxy.check_cli import DEFAULT_PATH
    from popproxy.explain_cli import main_explain

    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    assert check_one(DEFAULT_PATH, out=io.StringIO(), err=err) == 1
    assert "give --config PATH" in err.getvalue()
    err = io.StringIO()
    assert main_explain(["--user", "alice", "--from", "127.0.0.1"], io.StringIO(), err) == 2
    assert err.getvalue().startswith("popproxy: policies: cannot read")
    assert "give --config PATH" in err.getvalue()
