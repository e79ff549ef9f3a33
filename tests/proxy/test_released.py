"""Quarantine releases reach UIDL-tracking clients (issue 19 item 9): notices under their own
UIDL, and released originals whose upstream copy the client deleted served by the proxy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.released import MAX_UIDL, notice_uidl, released_uidl
from popproxy.quarantine import HeldMessage, QuarantineStore
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3

PHISH = (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
         b"Content-Type: text/html\r\n\r\n"
         b'<a href="http://198.51.100.7/login">https://www.paypal.com/</a>\r\n'
         b"<form action=\"http://198.51.100.7/p\"><input type=password></form>\r\n"
         b".a line starting with a dot\r\n")
CLEAN = b"From: a@example.test\r\nSubject: hello\r\n\r\nJust text.\r\n"
QUARANTINE = {"thresholds": {"tag": 0.5, "defang": 0.6, "quarantine": 0.7}}


@contextmanager
def _proxy(loop: LoopThread, tmp: Path, **scan: object
           ) -> Iterator[tuple[RunningProxy, Mailbox]]:
    box = Mailbox(b"p", [CLEAN, PHISH], uidls=[b"uid-clean", b"uid-phish"])
    demo = DemoUpstream({b"u": box})
    with running_demo(loop, demo):
        config = make_config(demo.port, scan={"enabled": True, **QUARANTINE, **scan},
                             state_dir=str(tmp))
        with running_proxy(config, loop) as proxy:
            yield proxy, box


def _body(raw: bytes) -> bytes:
    return raw.split(b"\r\n", 1)[1][: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")


def _uidls(c: RawPOP3) -> dict[int, bytes]:
    lines = c.command("UIDL").split(b"\r\n")[1:-2]
    return {int(n): u for n, u in (line.split(b" ", 1) for line in lines)}


def _release_all(tmp: Path) -> str:
    store = QuarantineStore(tmp / "quarantine")
    (held,) = store.list()
    store.release(held.id)
    return held.id


def test_notice_uidl_stays_within_rfc_1939() -> None:
    assert notice_uidl(b"00000001509ea0e0") == b"00000001509ea0e0.popproxy-held"
    long = b"x" * MAX_UIDL
    derived = notice_uidl(long)
    assert derived != long and len(derived) <= MAX_UIDL
    assert all(0x21 <= c <= 0x7E for c in derived)
    assert notice_uidl(long) == derived  # stable across sessions
    assert released_uidl("ab12") == b"popproxy-released-ab12"


def test_keep_mode_release_is_listed_under_the_original_uidl(loop_thread: LoopThread,
                                                             tmp_path: Path) -> None:
    with _proxy(loop_thread, tmp_path) as (proxy, _):
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean", 2: b"uid-phish.popproxy-held"}
            assert c.command("UIDL 2") == b"+OK 2 uid-phish.popproxy-held\r\n"
            assert b"198.51.100.7/login" not in _body(c.command("RETR 2"))
            c.command("QUIT")
        _release_all(tmp_path)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean", 2: b"uid-phish"}  # new to the client
            assert _body(c.command("RETR 2")) == PHISH
            assert c.command("STAT").startswith(b"+OK 2 ")  # no extra message: still upstream
            c.command("QUIT")


def test_no_keep_release_is_served_from_the_quarantine_once(loop_thread: LoopThread,
                                                            tmp_path: Path) -> None:
    with _proxy(loop_thread, tmp_path) as (proxy, box):
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            c.command("RETR 2")
            assert c.command("DELE 2").startswith(b"+OK")
            assert c.command("QUIT").startswith(b"+OK")
        assert box.messages == [CLEAN]  # the original is gone upstream with the notice
        held_id = _release_all(tmp_path)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            stat = c.command("STAT").split()
            listing = c.command("LIST").split(b"\r\n")[1:-2]
            assert _uidls(c) == {1: b"uid-clean", 2: released_uidl(held_id)}
            body = _body(c.command("RETR 2"))
            assert body == PHISH  # the original, byte for byte (no forged header to rename)
            assert listing == [f"1 {len(CLEAN)}".encode(), f"2 {len(PHISH)}".encode()]
            assert stat[1:3] == [b"2", str(len(CLEAN) + len(PHISH)).encode()]
            assert c.command("LIST 2") == f"+OK 2 {len(PHISH)}\r\n".encode()
            assert _body(c.command("TOP 2 0")) == PHISH.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
            assert c.command("DELE 2").startswith(b"+OK")
            assert c.command("DELE 2").startswith(b"-ERR")
            assert c.command("RETR 2").startswith(b"-ERR")
            assert c.command("QUIT").startswith(b"+OK")
        assert box.messages == [CLEAN]  # the upstream never saw message 2 of that session
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean"}  # delivered exactly once
            assert c.command("RETR 2").startswith(b"-ERR")
            c.command("QUIT")


@pytest.mark.parametrize("end", ["RSET", "no QUIT"])
def test_a_release_not_deleted_is_listed_again(loop_thread: LoopThread, tmp_path: Path,
                                               end: str) -> None:
    """RSET undoes the DELE, and a session that ends without QUIT deletes nothing (RFC 1939
    section 6): the released original is still listed next time."""
    with _proxy(loop_thread, tmp_path) as (proxy, _):
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            c.command("DELE 2")
            c.command("QUIT")
        held_id = _release_all(tmp_path)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert c.command("DELE 2").startswith(b"+OK")
            if end == "RSET":
                assert c.command("RSET").startswith(b"+OK")
                c.command("QUIT")
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean", 2: released_uidl(held_id)}
            c.command("QUIT")


def test_the_same_bytes_for_two_users_one_entry_each_gets_it_once(loop_thread: LoopThread,
                                                                  tmp_path: Path) -> None:
    """Issue 19 item 10: one entry names both users; after the release the user who kept the
    notice gets the original in place, the one who deleted it from the quarantine."""
    keeper = Mailbox(b"p", [PHISH], uidls=[b"k1"])
    deleter = Mailbox(b"p", [PHISH], uidls=[b"d1"])
    demo = DemoUpstream({b"keeper": keeper, b"deleter": deleter})
    with running_demo(loop_thread, demo):
        config = make_config(demo.port, scan={"enabled": True, **QUARANTINE},
                             state_dir=str(tmp_path))
        with running_proxy(config, loop_thread) as proxy:
            for name, delete in (("keeper", False), ("deleter", True)):
                with RawPOP3(proxy.port) as c:
                    c.login(name, "p")
                    c.command("RETR 1")
                    if delete:
                        c.command("DELE 1")
                    c.command("QUIT")
            (held,) = QuarantineStore(tmp_path / "quarantine").list()
            assert {u for u, _ in held.recipients} == {"keeper", "deleter"}
            assert held.subject == "Verify now" and held.sender.endswith("<alert@example.test>")
            _release_all(tmp_path)
            for user, uidl in (("keeper", b"k1"), ("deleter", released_uidl(held.id))):
                with RawPOP3(proxy.port) as c:
                    c.login(user, "p")
                    assert _uidls(c) == {1: uidl}
                    assert _body(c.command("RETR 1")) == PHISH
                    c.command("DELE 1")
                    c.command("QUIT")
                with RawPOP3(proxy.port) as c:  # delivered once only
                    c.login(user, "p")
                    assert _uidls(c) == {}
                    c.command("QUIT")


def test_no_keep_release_of_a_message_judged_at_retr_reaches_the_client(
        loop_thread: LoopThread, tmp_path: Path) -> None:
    """The listing budget spent at once: the phish is listed at its upstream size and held
    when RETR judges it (the padded notice under its own UIDL).  Deleted, then released: the
    next session gets the original from the quarantine, as for a message held at listing."""
    with _proxy(loop_thread, tmp_path, listing_budget=1e-9) as (proxy, box):
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            listing = c.command("LIST").split(b"\r\n")[1:-2]
            assert listing[1] == f"2 {len(PHISH)}".encode()  # deferred: the upstream's size
            notice = _body(c.command("RETR 2"))
            assert len(notice) == len(PHISH) and b"198.51.100.7/login" not in notice
            assert c.command("DELE 2").startswith(b"+OK")
            assert c.command("QUIT").startswith(b"+OK")
        assert box.messages == [CLEAN]
        held_id = _release_all(tmp_path)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean", 2: released_uidl(held_id)}
            assert _body(c.command("RETR 2")) == PHISH
            c.command("QUIT")


def _deleted_then_released(proxy: RunningProxy, tmp: Path) -> str:
    """The phish's notice deleted by a no-keep client, then the original released."""
    with RawPOP3(proxy.port) as c:
        c.login("u", "p")
        c.command("RETR 2")
        c.command("DELE 2")
        c.command("QUIT")
    return _release_all(tmp)


def test_a_release_purged_after_listing_is_refused_not_fatal(loop_thread: LoopThread,
                                                             tmp_path: Path) -> None:
    """The admin purges a released original while a session has it listed: RETR and TOP of it
    answer -ERR [SYS/PERM] (RFC 3206 section 4), and the session goes on."""
    with _proxy(loop_thread, tmp_path) as (proxy, box):
        held_id = _deleted_then_released(proxy, tmp_path)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean", 2: released_uidl(held_id)}
            QuarantineStore(tmp_path / "quarantine").remove(held_id)
            assert c.command("RETR 2") == b"-ERR [SYS/PERM] message 2 is no longer available\r\n"
            assert c.command("TOP 2 0").startswith(b"-ERR [SYS/PERM]")
            assert _body(c.command("RETR 1")) == CLEAN
            assert c.command("QUIT").startswith(b"+OK")
        assert box.messages == [CLEAN]


def test_a_release_purged_while_listing_is_not_listed(loop_thread: LoopThread, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Purged between the quarantine's list of pending releases and the read of its file: the
    session lists the rest, and does not end."""
    pending = QuarantineStore.pending

    def pending_then_purged(self: QuarantineStore, box: str) -> list[HeldMessage]:
        found = pending(self, box)
        for held in found:
            (self.directory / f"{held.id}.eml").unlink()
        return found

    with _proxy(loop_thread, tmp_path) as (proxy, _):
        _deleted_then_released(proxy, tmp_path)
        monkeypatch.setattr(QuarantineStore, "pending", pending_then_purged)
        with RawPOP3(proxy.port) as c:
            c.login("u", "p")
            assert _uidls(c) == {1: b"uid-clean"}
            assert c.command("STAT") == f"+OK 1 {len(CLEAN)}\r\n".encode()
            assert c.command("RETR 2").startswith(b"-ERR")
            assert c.command("QUIT").startswith(b"+OK")
