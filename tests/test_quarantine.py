"""The quarantine store: held originals byte for byte, metadata beside them, ids that cannot
name a path.  File modes are tested with the other state files in test_state_permissions.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from popproxy.quarantine import HeldMessage, QuarantineStore, describe

ORIGINAL = b"From: x@example.test\r\nSubject: verify\r\n\r\n.dot line\r\n"


def _held(message_id: str, held_at: float = 1.0) -> HeldMessage:
    return HeldMessage(id=message_id, user="alice", held_at=held_at, score=12.5,
                       reasons=("phishing-link", "lookalike"), size=len(ORIGINAL))


def test_hold_keeps_the_original_and_its_metadata(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    store.hold(_held("ab12"), ORIGINAL)
    assert store.original("ab12") == ORIGINAL
    # reasons come back as a tuple; the first recipient is recorded
    assert store.get("ab12") == replace(_held("ab12"), recipients=(("alice", ""),))
    assert not store.released("ab12")


def test_holding_the_same_message_again_changes_nothing(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    store.hold(_held("ab12"), ORIGINAL)
    store.hold(_held("ab12", held_at=99.0), b"other bytes")
    assert store.original("ab12") == ORIGINAL
    assert store.get("ab12").held_at == 1.0


def test_hold_file_moves_a_spooled_original_into_place(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    spooled = tmp_path / "spooled"
    spooled.write_bytes(ORIGINAL)
    store.hold_file(_held("cd34"), spooled)
    assert not spooled.exists()
    assert store.original("cd34") == ORIGINAL
    again = tmp_path / "again"
    again.write_bytes(b"dup")
    store.hold_file(_held("cd34"), again)  # already held: the spool file is just removed
    assert not again.exists()
    assert store.original("cd34") == ORIGINAL


def test_release_is_recorded(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    store.hold(_held("ab12"), ORIGINAL)
    assert store.release("ab12").released
    assert store.released("ab12")
    assert store.get("ab12").released


@pytest.mark.parametrize("bad_id", ["", "../etc/passwd", "AB12", "ab12.json", "zz"])
def test_ids_other_than_hex_are_unknown(tmp_path: Path, bad_id: str) -> None:
    store = QuarantineStore(tmp_path / "q")
    for call in (store.get, store.original, store.release):
        with pytest.raises(KeyError):
            call(bad_id)
    assert not store.released(bad_id)


def test_list_is_oldest_first_and_empty_without_a_directory(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    assert store.list() == []
    store.hold(_held("bb", held_at=5.0), ORIGINAL)
    store.hold(_held("aa", held_at=9.0), ORIGINAL)
    store.hold(_held("cc", held_at=1.0), ORIGINAL)
    assert [h.id for h in store.list()] == ["cc", "bb", "aa"]


def test_every_mailbox_that_received_the_bytes_is_recorded(tmp_path: Path) -> None:
    """Issue 19 item 10: the same message held for two users (or upstreams) is one entry
    naming both."""
    store = QuarantineStore(tmp_path / "q")
    store.hold(replace(_held("ab12"), upstream="main"), ORIGINAL)
    store.hold(replace(_held("ab12"), user="bob", upstream="main"), ORIGINAL)
    store.hold(replace(_held("ab12"), user="bob", upstream="main"), ORIGINAL)  # again: once
    store.hold(replace(_held("ab12"), upstream="other"), ORIGINAL)
    assert store.get("ab12").recipients == (("alice", "main"), ("bob", "main"),
                                            ("alice", "other"))


def test_describe_reads_subject_sender_and_date(tmp_path: Path) -> None:
    original = tmp_path / "m.eml"
    original.write_bytes(b"From: =?utf-8?q?Bank_=C3=A9?= <x@example.test>\r\n"
                         b"Subject: verify\x07 now\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n"
                         b"\r\nbody\r\n")
    assert describe(original) == {"subject": "verify now",
                                  "sender": "Bank \u00e9 <x@example.test>",
                                  "date": "Fri, 04 Dec 2026 10:00:00 +0000"}


def test_notices_deleted_are_pending_once_released_until_delivered(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    store.hold(_held("ab12"), ORIGINAL)
    store.hold(_held("cd34"), ORIGINAL)
    box = "0123456789abcdef"
    store.notices_deleted(box, {"ab12", "cd34"})
    store.notices_deleted(box, {"ab12"})  # twice: listed once
    assert store.pending(box) == []  # not released yet
    store.release("ab12")
    assert [h.id for h in store.pending(box)] == ["ab12"]
    assert store.pending("fedcba9876543210") == []  # another mailbox: its copy is upstream
    store.delivered(box, {"ab12"})
    assert store.pending(box) == []
    store.release("cd34")
    store.remove("cd34")  # purged: nothing to serve
    assert store.pending(box) == []
    with pytest.raises(KeyError):
        store.pending("../x")


def test_an_unreadable_entry_is_skipped_not_fatal(tmp_path: Path) -> None:
    """Retention runs at start: a metadata file broken by hand must not stop the proxy."""
    store = QuarantineStore(tmp_path / "q")
    store.hold(_held("ab12"), ORIGINAL)
    (tmp_path / "q" / "cd34.json").write_text("{not json")
    assert [h.id for h in store.list()] == ["ab12"]
    assert not store.released("cd34")
    assert store.purge(0.5, 10.0) == ["ab12"] and store.list() == []
