"""The scanner runs over the whole shared evaluation corpus without an exception.

Quality is not asserted here (bench/scan_quality.py reports it); this only proves robustness on
real mail.  Skipped where the corpus is not checked out next to the repository.
"""

from __future__ import annotations

import email
import re
from email.policy import compat32

import pytest
from selectolax.lexbor import LexborHTMLParser

from popproxy.scan import Scanner, apply_action, defang_message, load_feeds
from tests.scan.helpers import CORPUS


@pytest.mark.skipif(not (CORPUS / "phish").is_dir(), reason="shared corpus not present")
def test_whole_corpus_scans_without_error() -> None:
    feed = CORPUS / "feeds" / "openphish-hosts.txt"
    scanner = Scanner(feeds=load_feeds([feed]) if feed.is_file() else ())
    files = sorted(CORPUS.glob("*/*.eml"))
    assert files
    errors = []
    for path in files:
        data = path.read_bytes()
        verdict = scanner.scan(data)
        if verdict.cause == "error":
            errors.append(path.name)
        apply_action(data, verdict, clock=lambda: 0.0)
    assert errors == []


@pytest.mark.skipif(not (CORPUS / "phish").is_dir(), reason="shared corpus not present")
def test_defang_over_the_corpus_leaves_no_clickable_link() -> None:
    url = re.compile(r"(?i)\bhttps?://")
    clickable = []
    for path in sorted(CORPUS.glob("*/*.eml")):
        msg = email.message_from_bytes(defang_message(path.read_bytes()), policy=compat32)
        for part in msg.walk():
            kind = part.get_content_type()
            if kind not in ("text/plain", "text/html"):
                continue
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            if url.search(text) or (kind == "text/html" and _has_href(text)):
                clickable.append(path.name)
    assert clickable == []


def _has_href(markup: str) -> bool:
    """An element with an href as a browser parses the markup (a regex also matched the text
    "href=" inside another attribute's value)."""
    root = LexborHTMLParser(markup).root
    return root is not None and any(name.lower().rpartition(":")[2] == "href"
                                    for node in root.traverse() for name in node.attributes)
