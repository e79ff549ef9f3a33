"""The audit log: one JSON line per decision, secrets masked, ``ts`` first.

Reopening on SIGHUP (logrotate) is tested in test_audit_reopen.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from popproxy.auditlog import REDACTED, SECRET_FIELDS, AuditLog, open_audit_log, redact


def test_audit_redaction() -> None:
    assert redact({"password": "x", "user": "u", "raw": b"\xff"}) == {
        "password": REDACTED, "user": "u", "raw": "\\xff"}


def test_secret_field_names_are_masked_whatever_their_case() -> None:
    fields = {name.upper(): "hunter2" for name in SECRET_FIELDS}
    assert set(redact(fields).values()) == {REDACTED}


def test_an_event_is_one_json_line_with_ts_first() -> None:
    sink = io.StringIO()
    audit = AuditLog(sink, clock=lambda: 1700000000.5)
    audit.event("login", "s1", user="alice", result="ok", password="hunter2")
    audit.event("connect", None, client="192.0.2.1")
    first, second = sink.getvalue().splitlines()
    assert first.startswith('{"ts": 1700000000.500, "event": "login"')
    assert json.loads(first) == {"ts": 1700000000.5, "event": "login", "session": "s1",
                                 "user": "alice", "result": "ok", "password": REDACTED}
    assert "hunter2" not in sink.getvalue()
    assert json.loads(second)["session"] is None


def test_values_json_cannot_encode_are_written_as_text() -> None:
    sink = io.StringIO()
    AuditLog(sink, clock=lambda: 0.0).event("lockout", "s2", until=frozenset({3}))
    assert json.loads(sink.getvalue())["until"] == "frozenset({3})"


def test_without_a_path_nothing_is_written(capsys: pytest.CaptureFixture[str]) -> None:
    audit = open_audit_log(None)
    audit.event("login", "s3", user="bob")
    assert audit.path is None
    assert not audit.enabled  # callers skip building events (proxy/session.py)
    assert open_audit_log("-").enabled
    assert capsys.readouterr() == ("", "")


def test_dash_means_standard_error(capsys: pytest.CaptureFixture[str]) -> None:
    open_audit_log("-").event("login", "s4", user="carol")
    assert json.loads(capsys.readouterr().err)["user"] == "carol"


def test_a_path_is_appended_to_and_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    for session in ("s5", "s6"):  # a restart appends, it does not truncate
        open_audit_log(str(path)).event("login", session)
    assert [json.loads(line)["session"] for line in path.read_text().splitlines()] == [
        "s5", "s6"]
    assert path.stat().st_mode & 0o777 == 0o600
