"""Where ``popproxy scan`` reads messages from: files, directories, mbox, Maildir, in a
stable order, with unreadable paths reported as items (the CLI's output is in
test_cli_scan.py)."""

from __future__ import annotations

import mailbox
from pathlib import Path

from popproxy.scan.sources import Item, is_maildir, is_mbox, iter_items

ONE = b"From: a@example.test\r\nSubject: one\r\n\r\nbody one\r\n"
TWO = b"From: b@example.test\r\nSubject: two\r\n\r\nbody two\r\n"


def test_maildir_reads_cur_then_new_and_skips_tmp(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    for sub, name, data in (("new", "a", TWO), ("cur", "b", ONE), ("tmp", "c", b"partial")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_bytes(data)
    assert is_maildir(root) and not is_maildir(root / "cur")
    assert [item.data for item in iter_items([str(root)])] == [ONE, TWO]


def test_mbox_messages_are_numbered(tmp_path: Path) -> None:
    path = tmp_path / "box"
    box = mailbox.mbox(path, create=True)
    box.add(ONE)
    box.add(TWO)
    box.close()
    assert is_mbox(path)
    items = list(iter_items([str(path)]))
    assert [item.path for item in items] == [f"{path}:1", f"{path}:2"]
    assert all(item.data is not None and b"Subject: " in item.data for item in items)


def test_directories_are_walked_in_order_without_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "b.eml").write_bytes(TWO)
    (tmp_path / "a.eml").write_bytes(ONE)
    (tmp_path / ".draft.eml").write_bytes(b"hidden")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.eml").write_bytes(ONE)
    names = [Path(item.path).name for item in iter_items([str(tmp_path)])]
    assert names == ["a.eml", "b.eml", "c.eml"]


def test_a_missing_path_is_an_error_item(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert list(iter_items([missing])) == [Item(missing, error="no such file or directory")]
    assert not is_mbox(tmp_path / "missing")
    empty = tmp_path / "empty.eml"
    empty.write_bytes(b"")
    assert list(iter_items([str(empty)])) == [Item(str(empty), data=b"")]  # judged, not lost
