"""The URL of a meta refresh, read as the HTML standard reads it (moved from
test_extract.py, where refresh links are followed through the scanner)."""

from __future__ import annotations

import pytest

from popproxy.scan.refresh import refresh_url


def test_refresh_content_parsing_follows_the_standard() -> None:
    assert refresh_url("5") == ""  # a reload, no URL
    assert refresh_url("soon; url=x") == ""  # no time: the whole content is ignored
    assert refresh_url("1; url = 'a' b") == "a"
    assert refresh_url("1;urlx") == "urlx"


@pytest.mark.parametrize(("content", "url"), [
    ("0; url=http://a.test/", "http://a.test/"),
    ("0;URL='http://a.test/'", "http://a.test/"),
    ('5 , Url = "http://a.test/"', "http://a.test/"),
    ("0;http://a.test/", "http://a.test/"),  # no "url=": browsers redirect anyway
    ("0.5 http://a.test/", "http://a.test/"),
    ("  3", ""),
])
def test_refresh_url_spellings(content: str, url: str) -> None:
    assert refresh_url(content) == url
