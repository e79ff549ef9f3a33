"""``scan.urls``: URLs are read the way a browser reads them (WHATWG URL Standard).

Each spelling below opens a page in a browser; the old urlsplit-based parser saw no host in it,
so the link was not judged.  Tests check ``parse_url`` and then the whole scanner, with the
link in an HTML anchor (where a browser follows it) and, where a mail client would make a link
of it, in plain text.
"""

from __future__ import annotations

import pytest

from popproxy.scan.urls import parse_url
from tests.scan.helpers import build, names, scan

IP = "198.51.100.7"


def _host(url: str) -> str | None:
    info = parse_url(url)
    return info.host if info is not None else None


def _judged_in_href(url: str, signal: str = "link-ip-host") -> None:
    html = f'<html><body><p>Dear customer</p><a href="{url}">Open</a></body></html>'
    verdict = scan(build(html=html))
    assert signal in names(verdict)
    assert verdict.score > 0


def _judged_in_text(text: str, signal: str = "link-ip-host") -> None:
    verdict = scan(build(text=f"Dear customer, please go to {text} today."))
    assert signal in names(verdict)
    assert verdict.score > 0


@pytest.mark.parametrize("url", [f"https:{IP}/login", f"http:{IP}", f"HTTPS:{IP}/x"])
def test_scheme_without_slashes_is_judged(url: str) -> None:
    assert _host(url) == IP
    _judged_in_href(url)


def test_scheme_without_slashes_lookalike_is_judged() -> None:
    assert _host("https:paypa1.example/login") == "paypa1.example"
    _judged_in_href("https:paypa1.example/login", "link-brand-lookalike")


@pytest.mark.parametrize("url", [f"http:/{IP}/login", f"https:/{IP}", f"https:///{IP}/x"])
def test_scheme_with_one_or_three_slashes_is_judged(url: str) -> None:
    assert _host(url) == IP
    _judged_in_href(url)
    _judged_in_text(url)


@pytest.mark.parametrize(
    ("url", "html_url"),
    [
        (f"\x01\x1f https://{IP}/login", f"&#1;&#31; https://{IP}/login"),
        (f"  \x0bhttp://{IP}/", f"&#11;http://{IP}/"),
        (f"\x7f\x00https://{IP}/", None),
    ],
)
def test_leading_control_chars_and_spaces_are_skipped(url: str, html_url: str | None) -> None:
    if url.startswith("\x7f"):
        assert parse_url(url) is None  # DEL is not stripped: a browser sees no URL either
        return
    assert _host(url) == IP
    assert html_url is not None
    _judged_in_href(html_url)


@pytest.mark.parametrize(
    "url",
    [f"https:\\\\{IP}\\login", f"https:/\\{IP}/login", f"http:\\/{IP}", f"HTTPS:\\\\\\{IP}"],
)
def test_backslashes_are_slashes(url: str) -> None:
    assert _host(url) == IP
    _judged_in_href(url)
    _judged_in_text(url)


@pytest.mark.parametrize(
    ("url", "html_url"),
    [
        (f"ht\ttps://{IP}/login", f"ht&#9;tps://{IP}/login"),
        ("https://198.51.\n100.7/", "https://198.51.&#10;100.7/"),
        ("h\rttp://198.51\t.100.7/", "h&#13;ttp://198.51&#9;.100.7/"),
    ],
)
def test_tabs_and_newlines_inside_are_removed(url: str, html_url: str) -> None:
    assert _host(url) == IP
    _judged_in_href(html_url)


@pytest.mark.parametrize("url", [f"HTTP://{IP}/", f"HtTpS://{IP}/", f"hTTp:{IP}"])
def test_upper_case_scheme(url: str) -> None:
    info = parse_url(url)
    assert info is not None
    assert info.scheme in ("http", "https")
    assert info.host == IP
    _judged_in_href(url)


def test_userinfo_tricks() -> None:
    info = parse_url(f"https://bank.example@{IP}/login")
    assert info is not None
    assert (info.userinfo, info.host) == ("bank.example", IP)
    info = parse_url("https://www.bank.example%40secure@evil.test/")
    assert info is not None
    assert (info.userinfo, info.host) == ("www.bank.example@secure", "evil.test")
    info = parse_url("https://user:pw@evil.test/")
    assert info is not None
    assert info.userinfo == "user:pw"
    _judged_in_href("https://bank.example@evil.test/login", "link-userinfo-host")
    _judged_in_text("https://bank.example@evil.test/login", "link-userinfo-host")


def test_backslash_before_at_ends_the_host() -> None:
    # A backslash ends the authority for http(s): the browser opens bank.example, and a parser
    # that kept the backslash would have judged evil.test instead.
    assert _host("https://bank.example\\@evil.test/") == "bank.example"
    # ... and the other way round the browser opens evil.test.
    info = parse_url("https://evil.test\\@bank.example/")
    assert info is not None
    assert (info.host, info.userinfo) == ("evil.test", "")


@pytest.mark.parametrize(
    ("url", "host", "display"),
    [
        ("https://p\u0430ypal.example/", "xn--pypal-4ve.example", "p\u0430ypal.example"),
        ("https://xn--pypal-4ve.example/", "xn--pypal-4ve.example", "p\u0430ypal.example"),
        ("https://P\u0430YPAL.example/", "xn--pypal-4ve.example", "p\u0430ypal.example"),
        ("https://evil\u3002test/", "evil.test", "evil.test"),  # ideographic full stop
        ("https://evil\uff0etest/", "evil.test", "evil.test"),  # full-width full stop
        ("https://\uff45vil.test/", "evil.test", "evil.test"),  # full-width letter
    ],
)
def test_idn_hosts_as_the_browser_reads_them(url: str, host: str, display: str) -> None:
    info = parse_url(url)
    assert info is not None
    assert (info.host, info.display_host) == (host, display)


def test_idn_lookalike_is_judged() -> None:
    _judged_in_href("https://p\u0430ypal.example/", "link-brand-lookalike")


@pytest.mark.parametrize(
    ("url", "obfuscated"),
    [
        (f"http://{IP}/", False),
        (f"http://{IP}./", False),
        (f"http://{IP}:8080/", False),
        ("http://3325256711/", True),  # decimal
        ("http://0306.063.0144.07/", True),  # octal
        ("http://0xc6.0x33.0x64.0x7/", True),  # hex
        ("http://0xC6.51.100.7/", True),  # mixed
        ("http://198.51.25607/", True),  # short form: last part fills the rest
        ("http://0xc6336407/", True),
        ("http://%31%39%38.51.100.7/", True),  # percent-encoded digits
        ("http://\uff11\uff19\uff18.51.100.7/", True),  # full-width digits
        ("https:3325256711/login", True),
    ],
)
def test_ip_literal_spellings(url: str, obfuscated: bool) -> None:
    info = parse_url(url)
    assert info is not None
    assert info.ip is not None
    assert (info.ip.address, info.ip.obfuscated) == (IP, obfuscated)
    _judged_in_href(url, "link-ip-obfuscated" if obfuscated else "link-ip-host")


def test_ipv6_literal() -> None:
    info = parse_url("http://[2001:DB8::1]/x")
    assert info is not None
    assert info.ip is not None
    assert info.ip.address == "2001:db8::1"


@pytest.mark.parametrize(
    "url",
    ["http://a b.example/", "http://[::1", "http://0x100000000/", "http://1.2.3.4.5/", "login"],
)
def test_invalid_urls_are_no_urls(url: str) -> None:
    assert parse_url(url) is None


def test_script_and_inline_schemes_keep_their_scheme() -> None:
    for url, scheme in [
        ("java\tscript:alert(1)", "javascript"),
        ("  JAVASCRIPT:alert(1)", "javascript"),
        ("data:text/html,<b>x</b>", "data"),
        ("mailto:a@b.example", "mailto"),
    ]:
        info = parse_url(url)
        assert info is not None
        assert (info.scheme, info.host) == (scheme, "")


# Moved from test_hosts.py: parse_url's own parts.
def test_parse_url_userinfo_and_case() -> None:
    info = parse_url("HTTPS://bank.example@EVIL.test:8443/x")
    assert info is not None
    assert (info.scheme, info.host, info.userinfo) == ("https", "evil.test", "bank.example")


def test_parse_url_schemes() -> None:
    js = parse_url("java\tscript:alert(1)")
    assert js is not None and js.scheme == "javascript"
    assert parse_url("not a url") is None
    assert parse_url("http://[::1") is None


def test_trailing_dot_long_hosts_and_path() -> None:
    info = parse_url("https://evil.test./a/b?q=1")
    assert info is not None and (info.host, info.path) == ("evil.test", "/a/b")
    assert parse_url("https://" + "a." * 130 + "test/") is None  # RFC 1035: over 255 octets
    mail = parse_url("mailto:someone@example.test")
    assert mail is not None and (mail.scheme, mail.host) == ("mailto", "")
