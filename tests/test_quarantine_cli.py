"""``popproxy quarantine list|show|release``: what an admin sees, and the exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.quarantine import HeldMessage, QuarantineStore
from popproxy.quarantine_cli import main_quarantine

ORIGINAL = b"From: x@example.test\r\nSubject: verify\r\n\r\nbody\r\n"
HELD = HeldMessage(id="ab12", user="alice", held_at=86400.0, score=12.5,
                   reasons=("phishing-link",), size=len(ORIGINAL))


def _policy(tmp_path: Path) -> Path:
    """A minimal policy whose state_dir holds one quarantined message."""
    state = tmp_path / "state"
    QuarantineStore(state / "quarantine").hold(HELD, ORIGINAL)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "listeners:\n"
        "  - {name: pop3, host: 127.0.0.1, port: 1110, mode: plain,"
        " allow_plaintext_login: true}\n"
        "upstream: {host: 127.0.0.1, port: 110}\n"
        f"state_dir: {state}\n")
    return policy


def test_list_shows_one_line_per_message(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main_quarantine(["--config", str(_policy(tmp_path)), "list"]) == 0
    line = capsys.readouterr().out.rstrip("\n")
    assert line.split() == ["ab12", "1970-01-02", "00:00", "held", "alice", "12.5",
                            "phishing-link"]


def test_show_prints_the_original_bytes(tmp_path: Path,
                                        capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main_quarantine(["-c", str(_policy(tmp_path)), "show", "ab12"]) == 0
    assert capfdbinary.readouterr().out == ORIGINAL


def test_release_then_list_says_released(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    policy = str(_policy(tmp_path))
    assert main_quarantine(["-c", policy, "release", "ab12"]) == 0
    assert "ab12: released" in capsys.readouterr().out
    assert main_quarantine(["-c", policy, "list"]) == 0
    assert "released" in capsys.readouterr().out.split()


def test_an_unknown_id_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_quarantine(["-c", str(_policy(tmp_path)), "release", "../x"]) == 1
    assert "no held message '../x'" in capsys.readouterr().err


def test_a_bad_policy_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_quarantine(["-c", str(tmp_path / "missing"), "list"]) == 2
    assert capsys.readouterr().err.startswith("popproxy quarantine: ")
