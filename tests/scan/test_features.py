"""The feature vector of the trained combiner, computed on hand-made inputs: signals as
``sig:`` names, link and sender shape as classes (never a host), counts capped.  The check
that no feature name carries a host or a forbidden word on real messages is in test_model.py."""

from __future__ import annotations

import math

import pytest

from popproxy.scan.extract import Extracted, Link
from popproxy.scan.features import SIGNAL_PREFIX, Observed, attachment_class, vector
from popproxy.scan.verdict import Signal


@pytest.mark.parametrize(("filename", "content_type", "kind"), [
    ("invoice.pdf", "application/octet-stream", "pdf"),
    ("Report.DOCX", "application/octet-stream", "office"),
    ("invoice.pdf.exe", "application/pdf", "script"),  # the last extension decides
    ("", "application/pdf", "pdf"),
    ("", "image/heic", "image"),
    ("data.bin", "application/octet-stream", "other"),
])
def test_attachment_class(filename: str, content_type: str, kind: str) -> None:
    assert attachment_class(filename, content_type) == kind


def test_an_empty_message_has_only_its_sender_and_text_shape() -> None:
    assert vector([], Observed(), [], "", 0) == {"sender.no_domain": 1.0}
    plain = vector([], Observed(), [], "example.org", 200)
    assert plain == {"text.chars": pytest.approx(math.log1p(200) / 10.0)}


def test_signals_links_and_sender_shape() -> None:
    links = [Link("http://login-verify.evil.top/wp-admin/x.php?e=a@b.c&utm_source=x", "href"),
             Link("https://www.example.org/", "text")]
    out = vector([Signal(name="link-ip-host", weight=3.0)], Observed(), links,
                 "mail.my-shop99.example.org", 0)
    assert out[SIGNAL_PREFIX + "link-ip-host"] == 1.0
    assert out["links.count"] == pytest.approx(math.log1p(2))
    assert out["links.http_share"] == 0.5
    assert out["host.abused_tld_share"] == 0.5
    assert out["url.query_address"] == 1.0
    assert out["url.max_query_keys"] == 1.0  # utm_* keys do not count
    assert out["url.lure_tokens"] >= 3  # login, verify, wp-admin, .php
    assert out["links.sender_aligned"] == 0.5  # example.org is the sender's domain
    assert "sender.freemail" not in out  # zero features are left out
    assert not any("evil" in name or "example" in name for name in out)


def test_page_counts_and_attachments_are_capped() -> None:
    seen = Observed()
    page = Extracted(forms=9, scripts=1, images=1000)
    seen.add_page(page)
    seen.add_attachment("a.zip", "application/zip")
    seen.add_attachment("b.zip", "application/zip")
    out = vector([], seen, [], "gmail.com", 0)
    assert out["html.forms"] == 3.0 and out["html.scripts"] == 1.0
    assert out["html.images"] == pytest.approx(math.log1p(50))
    assert out["html.image_text_ratio"] == 10.0
    assert out["attach.archive"] == 1.0 and out["attach.count"] == pytest.approx(math.log1p(2))
    assert out["sender.freemail"] == 1.0
