"""``popproxy quarantine list|show|release``: what an admin sees, and the exit codes."""

from __future__ import annotations

import time
from dataclasses import replace
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


def test_list_shows_a_header_and_one_line_per_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_quarantine(["--config", str(_policy(tmp_path)), "list"]) == 0
    header, line = capsys.readouterr().out.rstrip("\n").split("\n")
    assert header.split() == ["ID", "HELD", "(UTC)", "STATE", "SCORE", "USERS", "FROM",
                              "SUBJECT", "REASONS"]
    # an entry from before subject/sender were recorded: "-"
    assert line.split() == ["ab12", "1970-01-02", "00:00", "held", "12.5", "alice", "-", "-",
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


def _store_with_three(tmp_path: Path) -> tuple[str, QuarantineStore]:
    """Three held messages: old (alice), recent (bob, then alice too), recent (carol)."""
    policy = str(_policy(tmp_path))
    store = QuarantineStore(tmp_path / "state" / "quarantine")
    now = time.time()
    recent = replace(HELD, id="cd34", user="bob", held_at=now - 3600, upstream="main",
                     reasons=("attach-executable (x.exe)",), subject="Invoice",
                     sender="Billing <b@example.test>")
    store.hold(recent, ORIGINAL)
    store.hold(replace(recent, user="alice"), ORIGINAL)  # the same bytes for alice
    store.hold(replace(recent, id="ef56", user="carol"), ORIGINAL)
    return policy, store


def _ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


def test_list_filters_by_user_since_and_reason(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19 item 10: every recipient is listed, and the list can be narrowed."""
    policy, _ = _store_with_three(tmp_path)
    assert main_quarantine(["-c", policy, "list"]) == 0
    out = capsys.readouterr().out
    assert _ids(out) == ["ab12", "cd34", "ef56"]
    (row,) = [line for line in out.splitlines() if line.startswith("cd34")]
    assert "alice,bob" in row and "Billing <b@example.test>" in row and "Invoice" in row
    for args, expected in ((["--user", "ALICE"], ["ab12", "cd34"]),
                           (["--user", "carol"], ["ef56"]),
                           (["--since", "1d"], ["cd34", "ef56"]),
                           (["--since", "1970-01-02T00:00"], ["ab12", "cd34", "ef56"]),
                           (["--since", "2999-01-01"], []),
                           (["--reason", "executable"], ["cd34", "ef56"]),
                           (["--user", "alice", "--reason", "phishing"], ["ab12"])):
        assert main_quarantine(["-c", policy, "list", *args]) == 0
        assert _ids(capsys.readouterr().out) == expected, args


def test_purge_older_than(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, store = _store_with_three(tmp_path)
    assert main_quarantine(["-c", policy, "purge", "--older-than", "30d"]) == 0
    assert capsys.readouterr().out == "1 held messages removed\n"
    assert [h.id for h in store.list()] == ["cd34", "ef56"]
    with pytest.raises(KeyError):
        store.original("ab12")


def test_purge_defaults_to_the_policy_retention(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    policy, store = _store_with_three(tmp_path)
    assert main_quarantine(["-c", policy, "purge"]) == 2  # no retention, no --older-than
    assert "--older-than" in capsys.readouterr().err
    Path(policy).write_text(Path(policy).read_text() + "scan: {quarantine_retention: 30m}\n")
    assert main_quarantine(["-c", policy, "purge"]) == 0
    assert store.list() == []


def test_a_bad_duration_names_the_value(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main_quarantine(["-c", str(_policy(tmp_path)), "purge", "--older-than", "soon"])
    assert "'soon' is not a duration" in capsys.readouterr().err
