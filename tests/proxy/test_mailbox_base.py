"""MailboxState: the state MailboxView keeps per session (split from mailbox.py)."""

from __future__ import annotations

from popproxy.proxy.mailbox import MailboxView
from popproxy.proxy.mailbox_base import MailboxState
from popproxy.proxy.released import ReleasingMailbox


def test_slots_only_no_instance_dict() -> None:
    # Idle memory per session: the split must not give MailboxView a __dict__.
    assert MailboxView.__slots__ == ()
    assert "__dict__" not in dir(MailboxView)
    assert "deleted" in MailboxState.__slots__


def test_numbered_is_the_listing_hook() -> None:
    # ReleasingMailbox adds its messages through the hook, not by overriding _load.
    assert "_load" not in ReleasingMailbox.__dict__
    assert "_numbered" in ReleasingMailbox.__dict__
    uidls = {1: b"a", 2: b"b"}
    assert MailboxState._numbered(object.__new__(MailboxView), uidls) is uidls
