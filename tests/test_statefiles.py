"""Private state (``statefiles.py``): directories 0700 and files 0600, and existing ones
made wider (a loose umask, an older release, a hand-made file) are tightened on open.

tests/test_state_permissions.py checks every state file popproxy writes end to end; these
are the helpers' own rules.
"""

from __future__ import annotations

import os
from pathlib import Path

from popproxy.statefiles import PRIVATE_DIR, PRIVATE_FILE, private_dir, tighten, write_private


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_directory_is_private_and_an_old_wide_one_is_tightened(tmp_path: Path) -> None:
    assert _mode(private_dir(tmp_path / "state")) == PRIVATE_DIR
    wide = tmp_path / "old"
    wide.mkdir()
    wide.chmod(0o755)
    private_dir(wide)
    assert _mode(wide) == PRIVATE_DIR


def test_written_files_are_0600_even_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "key", b"secret")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "key") == PRIVATE_FILE
    assert (tmp_path / "key").read_bytes() == b"secret"


def test_rewriting_a_wide_file_tightens_and_truncates_it(tmp_path: Path) -> None:
    path = tmp_path / "verdicts"
    path.write_bytes(b"a much longer old content")
    path.chmod(0o644)
    write_private(path, b"new")
    assert (_mode(path), path.read_bytes()) == (PRIVATE_FILE, b"new")


def test_tighten_only_drops_bits(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("")
    path.chmod(0o400)
    tighten(path, PRIVATE_FILE)
    assert _mode(path) == 0o400  # already private: read-only stays read-only
    tighten(tmp_path / "missing", PRIVATE_FILE)  # a file that is gone is not an error
    assert not (tmp_path / "missing").exists()
