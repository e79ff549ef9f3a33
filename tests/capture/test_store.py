"""The capture directory: private, one new file per session, never written through a link."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from popproxy.capture.store import capture_name, prepare_directory, write_capture


def test_file_names_never_clash_or_escape(tmp_path: Path) -> None:
    assert capture_name("../../etc/passwd") == "_.._etc_passwd.mitm"
    first = write_capture(tmp_path, "abc", b"1")
    second = write_capture(tmp_path, "abc", b"2")
    assert (first.name, second.name) == ("abc.mitm", "abc-1.mitm")
    assert first.read_bytes() == b"1"
    (tmp_path / "link.mitm").symlink_to(tmp_path / "target")
    assert write_capture(tmp_path, "link", b"3").name == "link-1.mitm"
    assert not (tmp_path / "target").exists()  # never written through a planted symlink


@pytest.mark.parametrize(("session_id", "name"), [
    ("a1b2c3", "a1b2c3.mitm"),
    ("...", "session.mitm"),  # nothing left after the leading dots
    (".hidden", "hidden.mitm"),
    ("ü space", "__space.mitm"),
])
def test_capture_name(session_id: str, name: str) -> None:
    assert capture_name(session_id) == name


def test_written_files_are_0600(tmp_path: Path) -> None:
    path = write_capture(prepare_directory(tmp_path / "c"), "s1", b"flow")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700


def test_an_existing_readable_directory_is_kept_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o755)
    with caplog.at_level(logging.WARNING, logger="popproxy.capture"):
        assert prepare_directory(directory) == directory
    assert "accessible to other users (mode 755)" in caplog.text
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755  # the admin's choice stands
