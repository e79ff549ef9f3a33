"""One test per link signal, through the scanner on small messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from popproxy.scan import HostFeed, Scanner
from popproxy.scan.link_rules import shown_host
from tests.scan.helpers import build, load, names, scan


@pytest.mark.parametrize(
    ("body", "signal"),
    [
        ("go to http://198.51.100.7/login", "link-ip-host"),
        ("go to http://3325256711/login", "link-ip-obfuscated"),
        ("go to http://0xc6.0x33.0x64.0x07/", "link-ip-obfuscated"),
        ("go to https://bank.example@evil.test/login", "link-userinfo-host"),
        ("go to https://user:pw@evil.test/login", "link-userinfo"),
        ("go to https://bit.ly/3abcdef", "link-shortener"),
        ("go to hxxps://evil[.]test/login", "link-obfuscated"),
        ("go to https://xn--pypal-4ve.example/", "link-idn"),
        ("go to https://paypa1.example/", "link-brand-lookalike"),
        ("go to https://paypal.com.account-verify.example/", "link-brand-in-host"),
        ("go to https://storage.googleapis.com/bucket/login.html", "link-storage-page"),
        ("go to https://acct.blob.core.windows.net/web/index.htm#x", "link-storage-page"),
    ],
)
def test_text_link_signals(body: str, signal: str) -> None:
    assert signal in names(scan(build(text=body)))


def test_homoglyph_brand_and_mixed_script() -> None:
    # "p\u0430ypal" with a Cyrillic a: a confusable of a protected brand, and a mixed-script label.
    got = names(scan(build(text="sign in at https://p\u0430ypal.example/")))
    assert {"link-brand-lookalike", "link-idn-mixed-script", "link-idn"} <= got


def test_official_brand_hosts_are_quiet() -> None:
    got = names(scan(build(text="see https://www.paypal.com/ and https://login.microsoftonline.com/")))
    assert not any(n.startswith("link-brand") for n in got)


def test_images_on_storage_are_not_pages() -> None:
    got = names(scan(build(text="logo https://storage.googleapis.com/bucket/logo.png")))
    assert "link-storage-page" not in got


def test_brand_inside_a_word_is_not_a_brand() -> None:
    got = names(scan(build(text="see https://applecore.example/ and https://pineapple.example/")))
    assert "link-brand-in-host" not in got


@pytest.mark.parametrize(
    ("html", "signal"),
    [
        ('<a href="javascript:alert(1)">open</a>', "link-script-scheme"),
        ('<a href="data:text/html;base64,PGgxPg==">open</a>', "link-data-uri"),
        ('<a href="http://www.example.org/">https://www.example.org/</a>', "link-https-shown-http"),
        ('<a href="https://evil.test/">www.example.org</a>', "link-text-mismatch"),
        ('<a href="https://evil.test/">https://www.paypal.com/</a>', "link-text-mismatch-brand"),
        ('<form action="https://evil.test/post"><input name="q"></form>', "form-remote-action"),
        ('<form><input type="password" name="p"></form>', "form-password"),
    ],
)
def test_html_link_signals(html: str, signal: str) -> None:
    assert signal in names(scan(build(html=f"<html><body>{html}</body></html>")))


def test_matching_anchor_text_is_quiet() -> None:
    html = '<a href="https://news.example.org/a">www.example.org</a> <a href="#">Click here</a>'
    got = names(scan(build(html=html)))
    assert "link-text-mismatch" not in got


def test_shown_host() -> None:
    assert shown_host("https://www.paypal.com/signin") == "www.paypal.com"
    assert shown_host("www.example.org") == "www.example.org"
    assert shown_host("invoice.pdf") is None
    assert shown_host("Click here") is None


def test_html_mismatch_message_file() -> None:
    verdict = scan(load("b64_html_mismatch.eml"))
    assert {"link-text-mismatch-brand", "link-https-shown-http", "sender-brand-mismatch"} <= names(
        verdict
    )
    assert verdict.flagged


def test_feed_hit(tmp_path: Path) -> None:
    path = tmp_path / "feed.txt"
    path.write_text("# test feed\nlogin.evil.test\n")
    scanner = Scanner(feeds=[HostFeed(path)])
    verdict = scanner.scan(build(text="see https://login.evil.test/x"))
    assert "link-feed-host" in names(verdict)
    assert verdict.flagged


def test_feeds_from_config_paths(tmp_path: Path) -> None:
    from popproxy.scan import ScanSettings

    path = tmp_path / "feed.txt"
    path.write_text("evil.test\n")
    scanner = Scanner(ScanSettings(feed_paths=(path,)))
    assert len(scanner.feeds) == 1
    assert "link-feed-host" in names(scanner.scan(build(text="https://www.evil.test/")))
