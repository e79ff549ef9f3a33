"""State files hold user names, client addresses and mail: 0600 files in a 0700 state dir.

The attack: another local user (a shell account, a compromised daemon) reads the audit log or
the quarantine and learns who logs in from where, and reads held mail.  Files made before the
rule, or under a loose umask, are tightened when popproxy opens them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from popproxy import cli
from popproxy.auditlog import AuditLog, open_audit_log
from popproxy.policy.schema_lockout import Lockout
from popproxy.proxy.lockout_guard import load_secret
from popproxy.proxy.tls import generate_self_signed
from popproxy.quarantine import HeldMessage, QuarantineStore


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """The usual 022 umask: without the fix every file here would be world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


HELD = HeldMessage(id="ab12", user="alice@example.com", held_at=1.0, score=12.0,
                   reasons=("phishing-link",), size=5)


def test_quarantine_is_not_readable_by_other_users(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "quarantine")
    store.hold(HELD, b"mail\r\n")
    assert mode(tmp_path / "quarantine") == 0o700
    assert mode(tmp_path / "quarantine" / "ab12.eml") == 0o600
    assert mode(tmp_path / "quarantine" / "ab12.json") == 0o600
    store.release("ab12")  # the rewritten metadata stays private
    assert mode(tmp_path / "quarantine" / "ab12.json") == 0o600
    assert store.get("ab12").released


def test_quarantine_made_world_readable_earlier_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "quarantine"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    for name in ("ab12.eml", "ab12.json", "cd34.json"):
        (directory / name).write_text("{}")
        os.chmod(directory / name, 0o644)
    QuarantineStore(directory).hold(HELD, b"mail\r\n")
    assert mode(directory) == 0o700
    assert mode(directory / "ab12.eml") == 0o600
    assert mode(directory / "ab12.json") == 0o600
    # release rewrites the metadata of an older, wide file: it comes out private
    (directory / "cd34.json").write_text(
        '{"id": "cd34", "user": "bob", "held_at": 2.0, "score": 11.0, "reasons": [], '
        '"size": 1, "released": false}')
    QuarantineStore(directory).release("cd34")
    assert mode(directory / "cd34.json") == 0o600


def test_audit_log_is_not_readable_by_other_users(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = open_audit_log(str(path))
    audit.event("login", "s1", user="alice", client="192.0.2.7", result="ok")
    assert mode(path) == 0o600
    assert b'"user": "alice"' in path.read_bytes()


def test_existing_world_readable_audit_log_is_tightened_on_open_and_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"old": "line"}\n')
    os.chmod(path, 0o644)
    audit = AuditLog(path=str(path))
    assert mode(path) == 0o600
    audit.event("connect", "s1", client="192.0.2.7")
    os.chmod(path, 0o644)  # e.g. an admin's logrotate "create 0644" after a rename
    assert audit.reopen()
    assert mode(path) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == '{"old": "line"}' and '"client": "192.0.2.7"' in lines[1]  # appended


def test_state_dir_made_private_by_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``popproxy run`` makes the state dir 0700, or tightens an existing 0755 one."""
    created, existing = tmp_path / "new-state", tmp_path / "old-state"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)

    def no_serving(factory: object, coro: Coroutine[Any, Any, None]) -> None:
        coro.close()

    monkeypatch.setattr("popproxy.cli.run_on", no_serving)
    for state in (created, existing):
        policy = tmp_path / f"{state.name}.yaml"
        policy.write_text("listeners:\n  - {name: pop3s, port: 9995, mode: tls}\n"
                          f"state_dir: {state}\n")
        assert cli.main(["run", "--config", str(policy)]) == 0
        assert mode(state) == 0o700


def test_state_dir_made_by_lockout_key_and_self_signed_cert_is_private(tmp_path: Path) -> None:
    load_secret(Lockout(), tmp_path / "a")
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "lockout.key") == 0o600
    pair = generate_self_signed(tmp_path / "b")
    assert mode(tmp_path / "b") == 0o700
    assert mode(pair.key) == 0o600

