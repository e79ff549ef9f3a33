"""Spool files: private on disk; header blocks found the way ``split_message`` splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.proxy.spool import cut_to_header, header_end, read_header, write_private

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody line\r\n"
HEADER = b"From: a@example.org\r\nSubject: hi\r\n\r\n"


@pytest.mark.parametrize(("message", "end"), [
    (MESSAGE, len(HEADER)),
    (b"From: a\n\nbody\n", len(b"From: a\n\n")),
    (b"From: a\r\n\r\nx\n\ny", len(b"From: a\r\n\r\n")),  # the first blank line wins
    (b"From: a\n\nx\r\n\r\ny", len(b"From: a\n\n")),
    (b"From: a\r\nno blank line\r\n", None),
])
def test_header_end(message: bytes, end: int | None) -> None:
    assert header_end(bytearray(message)) == end


def test_write_private_is_0600_and_truncates(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    write_private(path, b"a longer first version")
    write_private(path, b"short")
    assert path.read_bytes() == b"short"
    assert path.stat().st_mode & 0o777 == 0o600


def test_read_header_within_and_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    write_private(path, MESSAGE)
    assert read_header(path, len(HEADER)) == HEADER
    assert read_header(path, len(HEADER) - 1) is None


def test_read_header_of_a_message_without_body(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    write_private(path, b"Subject: only\r\n")
    assert read_header(path, 100) == b"Subject: only\r\n"


def test_cut_to_header_rewrites_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    write_private(path, MESSAGE)
    spooled = cut_to_header(path, 1000)
    assert (spooled.path, spooled.length) == (path, len(HEADER))
    assert path.read_bytes() == HEADER
