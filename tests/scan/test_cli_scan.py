"""``popproxy scan`` logic: inputs (Maildir, mbox, files, dirs), output formats, exit codes."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path

import pytest

from popproxy.scan.cli_scan import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_FLAGGED,
    EXIT_PIPE_CLOSED,
    main_scan,
)
from popproxy.scan.verdict import Signal
from tests.scan.helpers import REPO, build, load, scan


def _maildir(tmp_path: Path, names: list[str]) -> Path:
    root = tmp_path / "Maildir"
    box = mailbox.Maildir(root, create=True)
    for name in names:
        box.add(load(name))
    box.close()
    return root


def _mbox(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "box.mbox"
    box = mailbox.mbox(path, create=True)
    for name in names:
        box.add(load(name))
    box.close()
    return path


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_maildir_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _maildir(tmp_path, ["clean_plain.eml", "attach_exe.eml"])
    assert main_scan(["--json", str(root)]) == EXIT_FLAGGED
    records = _json_lines(capsys.readouterr().out)
    assert len(records) == 2
    for rec in records:
        assert {"path", "verdict", "flagged", "score", "reasons"} <= rec.keys()
        assert str(rec["path"]).startswith(str(root))
    assert sorted(bool(r["flagged"]) for r in records) == [False, True]


def test_mbox_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _mbox(tmp_path, ["clean_plain.eml", "clean_plain.eml"])
    assert main_scan([str(path)]) == EXIT_CLEAN
    out = capsys.readouterr().out
    assert f"{path}:1" in out and f"{path}:2" in out
    assert "2 scanned, 0 flagged, 0 errors" in out


def test_mbox_flagged_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _mbox(tmp_path, ["b64_html_mismatch.eml"])
    assert main_scan(["--json", str(path)]) == EXIT_FLAGGED
    (rec,) = _json_lines(capsys.readouterr().out)
    assert rec["flagged"] is True and rec["verdict"] != "pass"
    assert isinstance(rec["score"], float) and rec["reasons"]


def test_directory_of_eml_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("clean_plain.eml", "qp_ip_link.eml"):
        (tmp_path / name).write_bytes(load(name))
    (tmp_path / ".hidden").write_bytes(b"ignored")
    assert main_scan(["--json", str(tmp_path)]) == EXIT_FLAGGED
    paths = [Path(str(r["path"])).name for r in _json_lines(capsys.readouterr().out)]
    assert paths == ["clean_plain.eml", "qp_ip_link.eml"]


def test_unreadable_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.eml").write_bytes(load("attach_exe.eml"))
    assert main_scan(["--json", str(tmp_path / "a.eml"), str(tmp_path / "missing")]) == EXIT_ERROR
    records = _json_lines(capsys.readouterr().out)
    assert records[1]["verdict"] == "error" and records[1]["error"]


def test_feed_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "feed.txt"
    feed.write_text("# hosts\nwww.example.org\n")
    (tmp_path / "m.eml").write_bytes(load("clean_plain.eml"))
    assert main_scan(["--json", "--feed", str(feed), str(tmp_path / "m.eml")]) == EXIT_FLAGGED
    (rec,) = _json_lines(capsys.readouterr().out)
    assert "link-feed-host" in rec["signals"]  # type: ignore[operator]


def test_missing_feed_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.eml").write_bytes(load("clean_plain.eml"))
    assert main_scan(["--feed", str(tmp_path / "nope"), str(tmp_path / "m.eml")]) == EXIT_ERROR
    assert "cannot read feed" in capsys.readouterr().err


def test_no_progress_bar_when_not_a_tty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.eml").write_bytes(load("clean_plain.eml"))
    main_scan([str(tmp_path / "m.eml")])
    assert capsys.readouterr().err == ""


# --- a closed pipe: quiet exit, no traceback (``popproxy scan --json ... | head -1``) --------

# Messages in the mbox of the pipe tests: their JSON lines (~100 bytes each) must overflow
# the kernel's pipe buffer (64 KiB on Linux) plus Python's own (8 KiB), so the writer is
# still writing when ``head`` has gone.
_PIPE_MESSAGES = 1000


def _popproxy() -> list[str]:
    return [sys.executable, "-m", "popproxy"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_closed_read_end_exits_quietly(tmp_path: Path) -> None:
    path = _mbox(tmp_path, ["clean_plain.eml"] * 3)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        proc = subprocess.run(
            [*_popproxy(), "scan", "--json", "--no-progress", str(path)],
            stdout=write_end, stderr=subprocess.PIPE, cwd=REPO, env=_env(), timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == b""
    assert proc.returncode == EXIT_PIPE_CLOSED


def test_pipe_to_head_exits_quietly(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "many.mbox", create=True)
    message = load("clean_plain.eml")
    for _ in range(_PIPE_MESSAGES):
        box.add(message)
    box.close()
    command = " ".join([*_popproxy(), "scan", "--json", "--no-progress", "many.mbox"])
    script = f'{command} | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, cwd=tmp_path, env=_env(), timeout=300,
        check=False,
    )
    first = json.loads(proc.stdout.decode().splitlines()[0])
    assert first["verdict"] == "pass"
    assert proc.stderr.decode().strip() == f"status={EXIT_PIPE_CLOSED}"


# --- --explain: each signal with its evidence and its part in the score ---------------------

_EXPLAINED_HTML = (
    '<p>Please <a href="http://login.evil.example/session">www.paypal.com</a> and see '
    '<a href="http://trk.example.net/x">www.shop.example.org</a>. '
    "Verify your account within 24 hours.</p>"
)


def _explained(tmp_path: Path, *, sender: str = "PayPal <service@mailer.example.net>") -> Path:
    path = tmp_path / "explained.eml"
    path.write_bytes(build(html=_EXPLAINED_HTML, sender=sender))
    return path


def test_explain_shows_points_and_evidence_per_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main_scan(["--explain", str(_explained(tmp_path))]) == EXIT_FLAGGED
    out = capsys.readouterr().out
    assert "+5    counted   link-text-mismatch-brand (www.paypal.com -> login.evil.example)" in out
    assert "evidence: link: hxxp://login[.]evil[.]example/session" in out
    assert "+3    counted   sender-brand-mismatch (paypal: mailer.example.net)" in out
    assert "evidence: From: PayPal <service@mailer.example.net>" in out
    assert "http://login.evil.example" not in out  # defanged: no clickable phishing link


def test_explain_shows_a_shadowed_signal_and_what_counted_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_scan(["--explain", str(_explained(tmp_path))])
    out = capsys.readouterr().out
    assert ("1.5  shadowed  link-text-mismatch (www.shop.example.org -> trk.example.net): "
            "link-text-mismatch-brand counts for group 'mismatch'") in out
    assert "evidence: link: hxxp://trk[.]example[.]net/x" in out


def test_explain_names_wording_rules_without_the_wording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_scan(["--explain", str(_explained(tmp_path))])
    out = capsys.readouterr().out
    assert "counted   lure-credentials" in out
    assert "verify your account" not in out.lower()


def test_explain_json_points_add_up_to_the_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_scan(["--json", "--explain", str(_explained(tmp_path))])
    (record,) = _json_lines(capsys.readouterr().out)
    explained = record["explain"]
    assert isinstance(explained, list)
    assert sum(e["points"] for e in explained) == pytest.approx(record["score"])
    shadowed = [e for e in explained if not e["counted"]]
    assert [(e["signal"], e["points"], e["shadowed_by"]) for e in shadowed] == [
        ("link-text-mismatch", 0.0, "link-text-mismatch-brand")
    ]
    by_name = {e["signal"]: e for e in explained}
    assert by_name["link-text-mismatch-brand"]["evidence"] == (
        "link: http://login.evil.example/session"
    )


def test_explain_escapes_terminal_control_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An encoded-word hides ESC sequences (clear screen, an OSC 8 hyperlink) in the From name.
    path = _explained(
        tmp_path, sender="=?utf-8?q?PayPal_=1B[2J=1B]8;;https://evil.example/=07?= <x@evil.example>"
    )
    main_scan(["--explain", str(path)])
    out = capsys.readouterr().out
    assert "sender-brand-mismatch" in out
    assert "\x1b" not in out and "\x07" not in out


def test_evidence_stays_out_of_reasons_logs_and_equality(tmp_path: Path) -> None:
    verdict = scan(_explained(tmp_path).read_bytes())
    (sig,) = [s for s in verdict.signals if s.name == "link-text-mismatch-brand"]
    assert sig.evidence == "link: http://login.evil.example/session"
    assert "session" not in repr(sig) and "session" not in " ".join(verdict.reasons)
    assert sig == Signal(name=sig.name, weight=sig.weight, detail=sig.detail)


def test_explain_reports_an_unreadable_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.eml"
    assert main_scan(["--explain", str(missing)]) == EXIT_ERROR
    out = capsys.readouterr().out
    assert f"{missing}\n  error: " in out
    assert "1 scanned, 0 flagged, 1 errors" in out


def test_explain_of_a_clean_message_says_no_signals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clean.eml"
    path.write_bytes(load("clean_plain.eml"))
    assert main_scan(["--explain", str(path)]) == EXIT_CLEAN
    assert "  verdict pass, score 0 (tag at 4, defang at 7, quarantine at 10)\n  no signals" in (
        capsys.readouterr().out
    )


def test_explain_names_the_attachment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "attached.eml"
    path.write_bytes(build(text="Invoice attached.",
                           attachments=(("invoice.pdf.exe", b"MZ\x90\x00", "application/pdf"),)))
    main_scan(["--explain", str(path)])
    out = capsys.readouterr().out
    assert "counted   attach-double-ext (invoice.pdf.exe)" in out
    assert "evidence: the attachment named above" in out


def _policy(tmp_path: Path, scan_section: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text("listeners: [{name: a, port: 1995, mode: tls}]\n"
                      f"state_dir: {tmp_path / 'state'}\n"
                      f"scan:\n{scan_section}")
    return policy


def test_config_uses_the_policy_thresholds_and_feeds(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19 item 13: with --config the CLI says what the proxy would do."""
    feed = tmp_path / "feed.txt"
    feed.write_text("www.example.org\n")
    (tmp_path / "m.eml").write_bytes(load("clean_plain.eml"))
    (tmp_path / "l.eml").write_bytes(load("link_action_foreign.eml"))
    policy = _policy(tmp_path, f"  feeds: [{feed}]\n"
                               "  thresholds: {tag: 0.5, defang: 1.0, quarantine: 1.5}\n")
    assert main_scan(["--json", str(tmp_path / "l.eml")]) == EXIT_CLEAN  # defaults: 1.76 passes
    assert main_scan(["--json", "--config", str(policy), str(tmp_path / "m.eml"),
                      str(tmp_path / "l.eml")]) == EXIT_FLAGGED
    lines = _json_lines(capsys.readouterr().out)
    assert lines[0]["action"] == "pass"
    clean, link = lines[1:]
    assert "link-feed-host" in clean["signals"]  # type: ignore[operator]  # the policy's feed
    assert link["verdict"] == link["action"] == "quarantine"  # the policy's thresholds


def test_config_size_cap_and_fail_mode(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Over the policy's max_message_bytes a message is judged on its head and at worst
    quarantined, never defanged; a scanner over its budget gets the policy's fail mode."""
    big = load("attach_exe.eml") + b"\r\n" + b"x" * 76 * 40
    (tmp_path / "big.eml").write_bytes(big)
    capped = _policy(tmp_path, "  max_message_bytes: 1024\n"
                               "  thresholds: {tag: 0.5, defang: 1.0, quarantine: 100}\n")
    assert main_scan(["--json", "--config", str(capped), str(tmp_path / "big.eml")]) == 1
    (rec,) = _json_lines(capsys.readouterr().out)
    assert rec["verdict"] == "defang" and rec["action"] == "quarantine"
    closed = _policy(tmp_path, "  time_budget: 0.000000001\n  fail_mode: closed\n")
    assert main_scan(["--json", "--config", str(closed), str(tmp_path / "big.eml")]) == 1
    (rec,) = _json_lines(capsys.readouterr().out)
    assert rec["verdict"] == "unscanned" and rec["action"] == "quarantine"
    assert main_scan(["--config", str(closed), str(tmp_path / "big.eml")]) == 1
    header, row = capsys.readouterr().out.splitlines()[:2]
    assert header.split()[:3] == ["VERDICT", "ACTION", "SCORE"]
    assert row.split()[:2] == ["unscanned", "quarantine"]


def test_config_refused_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(tmp_path, "  thresholds: {tag: nope}\n")
    (tmp_path / "m.eml").write_bytes(load("clean_plain.eml"))
    assert main_scan(["--config", str(policy), str(tmp_path / "m.eml")]) == EXIT_ERROR
    assert "policy.yaml" in capsys.readouterr().err
