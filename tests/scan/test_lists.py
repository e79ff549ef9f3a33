"""The policy lists: well-formed entries, and the relations between lists the rules rely on."""

from __future__ import annotations

import re

from popproxy.scan import lists

HOST = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+")
EXTENSION = re.compile(r"[a-z0-9]+")


def test_host_lists_hold_lower_case_host_names() -> None:
    for name in ("SHORTENERS", "PATH_TENANTED_HOSTS", "SHARED_REGISTRABLE", "FREEMAIL_DOMAINS"):
        entries: frozenset[str] = getattr(lists, name)
        assert all(HOST.fullmatch(e) for e in entries), name
    assert all(HOST.fullmatch(s) for s in lists.STORAGE_SUFFIXES)
    assert len(set(lists.STORAGE_SUFFIXES)) == len(lists.STORAGE_SUFFIXES)


def test_extension_lists_hold_bare_lower_case_extensions() -> None:
    for name in ("RISKY_EXTENSIONS", "DECOY_EXTENSIONS"):
        entries: frozenset[str] = getattr(lists, name)
        assert all(EXTENSION.fullmatch(e) for e in entries), name


def test_every_shortener_is_path_tenanted() -> None:
    # A feed hit on a shortener's bare host says nothing about the link at hand.
    assert lists.SHORTENERS <= lists.PATH_TENANTED_HOSTS


def test_a_decoy_is_never_risky_itself() -> None:
    # "invoice.pdf.exe": the decoy must read as harmless, the real extension as risky.
    assert not lists.DECOY_EXTENSIONS & lists.RISKY_EXTENSIONS
    assert {"exe", "scr", "js", "iso", "lnk"} <= lists.RISKY_EXTENSIONS
