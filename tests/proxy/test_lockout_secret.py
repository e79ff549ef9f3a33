"""A lockout key that cannot be created or read is one clear line naming the file (at start-up:
``popproxy: cannot start: ...``, exit 1; on SIGHUP: the reload is refused), never a traceback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from popproxy.policy.schema_lockout import SECRET_FILE, Lockout
from popproxy.proxy.lockout_guard import LockoutSecretError, load_secret
from popproxy.proxy.server import ProxyServer
from tests.helpers import LoopThread, make_config
from tests.support.ports import free_port


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """``directory`` cannot get new files, even for root (chattr +i: immutable)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)], capture_output=True,
                                        check=False).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def _run(tmp_path: Path, secret_file: Path) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"listeners: [{{name: pop3, host: 127.0.0.1, port: {free_port()}, mode: plain, "
        "allow_plaintext_login: true}]\n"
        f"upstream: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"lockout: {{secret_file: {secret_file}}}\n"
        "scan: {enabled: false}\n"
    )
    return subprocess.run([sys.executable, "-m", "popproxy", "run", "--config", str(policy)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    # 2: an unusable file the policy names (issue 19 item 2); restarting cannot fix it.
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_popproxy_run_with_a_read_only_secret_directory(tmp_path: Path) -> None:
    keys = tmp_path / "etc"
    keys.mkdir()
    secret = keys / "lockout.key"
    with _read_only(keys):
        line = _one_line(_run(tmp_path, secret))
    # Found by the start-up checks (issue 19 item 2) before anything binds: key, file, fix.
    assert line == (f"popproxy: cannot start: lockout.secret_file: {secret}: no such file, and "
                    f"it cannot be created ({keys} is not writable); fix: create it before "
                    "starting popproxy (see docs/quickstart.md), or remove lockout.secret_file "
                    "to keep the key in state_dir")
    assert not secret.exists()


def test_popproxy_run_with_a_missing_secret_directory(tmp_path: Path) -> None:
    secret = tmp_path / "missing" / "lockout.key"
    line = _one_line(_run(tmp_path, secret))
    assert line == (f"popproxy: cannot start: lockout.secret_file: {secret}: no such file, and "
                    f"it cannot be created ({secret.parent} does not exist); fix: create it "
                    "before starting popproxy (see docs/quickstart.md), or remove "
                    "lockout.secret_file to keep the key in state_dir")


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "lockout.key"
    secret.mkdir()  # unreadable as a file, even for root
    with pytest.raises(LockoutSecretError, match=f"^cannot read the lockout key {secret}: "):
        load_secret(Lockout(secret_file=secret), tmp_path)


def test_a_read_only_state_dir_is_named(tmp_path: Path) -> None:
    with _read_only(tmp_path), pytest.raises(
        LockoutSecretError,
        match=f"^cannot create the lockout key {tmp_path / SECRET_FILE}: .*; make state_dir "
              "writable$",
    ):
        load_secret(Lockout(), tmp_path)


def test_the_key_is_made_once_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = load_secret(Lockout(), state)
    assert len(secret) == 64
    assert stat.S_IMODE((state / SECRET_FILE).stat().st_mode) == 0o600
    assert load_secret(Lockout(), state) == secret


def test_reload_to_an_uncreatable_secret_is_refused(loop_thread: LoopThread,
                                                    tmp_path: Path) -> None:
    server = ProxyServer(make_config(1, state_dir=str(tmp_path), lockout={"enabled": True}))
    guard = server.lockout
    assert guard is not None
    new = make_config(1, state_dir=str(tmp_path),
                      lockout={"enabled": True, "secret_file": str(tmp_path / "no" / "key")})

    async def reload() -> bool:
        return server.reload_policy(new)

    assert loop_thread.call(reload()) is False
    assert server.lockout is guard and server.config.lockout.secret_file is None


def _make_key(state_dir: str) -> bytes:
    return load_secret(Lockout(), Path(state_dir))


def test_workers_starting_together_all_read_the_one_whole_key(tmp_path: Path) -> None:
    """Several workers share a state_dir: none may read the key half written (an empty key
    would count their failures under other names)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_make_key, [str(tmp_path / "state")] * 8)
    assert len(set(keys)) == 1 and len(keys[0]) == 2 * 32
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [SECRET_FILE]
