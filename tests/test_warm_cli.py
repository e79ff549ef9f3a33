"""``popproxy warm`` refuses clearly, before connecting anywhere, when what it would fill is
not a cache the proxy reads, or when it cannot log in without a password."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from popproxy.cli import main
from popproxy.warm_cli import main_warm


def _policy(tmp_path: Path, scan: str = "{enabled: true}", upstream: str = "") -> Path:
    secret = tmp_path / "master.secret"
    secret.write_text("pw\n")
    login = f"  warm_login: {{master_user: m, password_file: {secret}}}"
    path = tmp_path / "p.yaml"
    path.write_text(
        "listeners: [{name: a, port: 1995, mode: tls}]\n"
        f"state_dir: {tmp_path / 'state'}\nscan: {scan}\n"
        f"upstream:\n  port: 1\n{upstream or login}\n")
    return path


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["warm", *argv]) == 2
    return capsys.readouterr().err


def test_without_redis_the_running_proxy_would_not_read_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refusal(capsys, ["--config", str(_policy(tmp_path)), "--user", "alice"])
    assert "scan.redis_url is not set" in err and "--offline" in err
    assert "verdicts.jsonl" in err


def test_scanning_off_has_nothing_to_warm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy(tmp_path, scan="{enabled: false}")
    err = _refusal(capsys, ["--config", str(path), "--user", "alice", "--offline"])
    assert "scan.enabled is false" in err


def test_an_upstream_without_warm_login_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy(tmp_path, upstream="  host: 127.0.0.1")
    err = _refusal(capsys, ["--config", str(path), "--user", "alice", "--offline"])
    assert "upstream 'default' has no warm_login" in err


def test_an_unreadable_password_file_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy(tmp_path, upstream="  warm_login: {master_user: m, password_file: /nonexistent}")
    err = _refusal(capsys, ["--config", str(path), "--user", "alice", "--offline"])
    assert "/nonexistent: No such file or directory" in err


def test_a_missing_user_list_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refusal(capsys, ["--config", str(_policy(tmp_path)), "--users",
                            str(tmp_path / "none.txt"), "--offline"])
    assert "none.txt" in err


def test_user_and_users_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main_warm(["--config", "x", "--user", "a", "--users", "f"], io.StringIO())


def test_a_negative_rate_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main_warm(["--config", str(_policy(tmp_path)), "--user", "a", "--rate", "-5"],
                  io.StringIO())
    assert info.value.code == 2 and "must be 0 (unlimited)" in capsys.readouterr().err
