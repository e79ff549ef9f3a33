"""URLs in running text made unclickable but readable, and link targets shown as a browser
would have resolved them.  Linear-time checks on hostile input are in test_defang_html.py."""

from __future__ import annotations

import pytest

from popproxy.scan.inert_text import absolute_url, defang_text, shown_target


@pytest.mark.parametrize(("text", "inert"), [
    ("see https://evil.example/a.b?x=1", "see hxxps://evil[.]example/a.b?x=1"),
    ("HTTP://Evil.Example", "hxxp://Evil[.]Example"),
    ("ftp://files.example/x or wss://ws.example", "fxp://files[.]example/x or wxss://ws[.]example"),
    ("visit www.evil.example today", "visit www[.]evil[.]example today"),
    ("http://http://evil.example", "hxxp://hxxp://evil[.]example"),
    ("no links here.", "no links here."),
])
def test_defang_text(text: str, inert: str) -> None:
    assert defang_text(text) == inert
    assert defang_text(inert) == inert  # idempotent


@pytest.mark.parametrize(("href", "base", "shown"), [
    ("https:evil.example/x", None, "hxxps://evil[.]example/x"),  # WHATWG: a host, not a path
    ("//evil.example/x", None, "hxxps://evil[.]example/x"),
    ("  https://evil.example/ ", None, "hxxps://evil[.]example/"),
    ("login.php", "https://evil.example/dir/", "hxxps://evil[.]example/dir/login.php"),
    ("login.php", None, "login.php"),  # relative: where it goes depends on the client
    ("http://[::1", None, "hxxp://[::1"),  # no browser resolves it: as written, inert
])
def test_shown_target(href: str, base: str | None, shown: str) -> None:
    assert shown_target(href, base) == shown


def test_absolute_url() -> None:
    assert absolute_url("HTTPS://Evil.Example") == "https://evil.example/"
    assert absolute_url("/relative") is None
