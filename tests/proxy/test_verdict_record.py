"""``proxy/verdict_record.py``: one cached verdict.  Keys and the stored form are tested with
the cache (tests/proxy/test_verdict_cache.py), which re-exports these names."""

from __future__ import annotations

import dataclasses

from popproxy.proxy.verdict_record import (
    CachedVerdict,
    cache_key,
    cache_key_in,
    listing_keys,
    mailbox_material,
)
from popproxy.scan.evidence import Evidence

EVERY_FIELD_SET = CachedVerdict(
    "quarantine", 9.5, ("lookalike",), 321, 1_000_000.0, "aaaaaaaaaaaa-111111111111",
    "q-id", ("link-brand-lookalike",), transient=True, released=True,
    evidence=Evidence((("link-brand-lookalike", "paypa1.test"),), ("paypa1.test",)),
    mailbox="box1")


def test_the_sample_sets_every_field_to_something_but_its_default() -> None:
    defaults = CachedVerdict("pass", 0.0, (), 0, 0.0, "")
    for field in dataclasses.fields(CachedVerdict):
        assert getattr(EVERY_FIELD_SET, field.name) != getattr(defaults, field.name), field.name


def test_carried_to_changes_the_generation_and_keeps_every_other_field() -> None:
    # carried_to lists the fields positionally (for speed): a field added to the class and
    # not to carried_to, or two swapped, shows here.
    carried = EVERY_FIELD_SET.carried_to("aaaaaaaaaaaa-222222222222")
    assert carried == dataclasses.replace(EVERY_FIELD_SET,
                                          generation="aaaaaaaaaaaa-222222222222")


def test_a_key_from_the_mailbox_material_is_the_full_key() -> None:
    # mailbox.py hashes each message with the mailbox half made once: the keys stored by
    # earlier versions (and other workers) must stay the same.
    box = mailbox_material("default", "Alice")
    for uidl, size in ((b"00000001abc", 512), (b"x", -1), (b"", 0)):
        assert cache_key_in(box, uidl, size) == cache_key("default", "alice", uidl, size)
    assert cache_key_in(box, b"u", 1) != cache_key_in(mailbox_material("other", "alice"), b"u", 1)


def test_a_listings_keys_are_each_messages_key() -> None:
    uidls, sizes = {1: b"00000001abc", 2: b"x", 3: b"y"}, {1: 512, 2: 0}  # 3: not in LIST
    assert listing_keys("default", "Alice", uidls, sizes) == {
        1: cache_key("default", "alice", b"00000001abc", 512),
        2: cache_key("default", "alice", b"x", 0), 3: cache_key("default", "alice", b"y", -1)}
