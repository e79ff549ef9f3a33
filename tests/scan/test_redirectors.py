"""Platform redirectors: the target is judged, the wrapper counts for nothing."""

from __future__ import annotations

import base64
import time
from urllib.parse import quote

import pytest

from popproxy.scan.extract import Link
from popproxy.scan.redirectors import MAX_UNWRAPS, MAX_WRAPPED_URL_CHARS, unwrap, unwrap_links
from tests.scan.helpers import build, names, scan

_TARGET = "https://paypa1.example/login?x=1"


def _bing(url: str) -> str:
    coded = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    return f"https://www.bing.com/ck/a?!&&p=0f3a&u=a1{coded}&ntb=1"


@pytest.mark.parametrize(
    "wrapped",
    [
        f"https://www.google.com/url?q={quote(_TARGET, safe='')}&sa=D&source=editors",
        f"https://www.google.co.uk/url?sa=t&url={quote(_TARGET, safe='')}",
        _bing(_TARGET),
        f"https://eur03.safelinks.protection.outlook.com/?url={quote(_TARGET, safe='')}&data=05",
        "https://urldefense.proofpoint.com/v2/url?u=https-3A__paypa1.example_login-3Fx-3D1&d=Dw",
        "https://urldefense.com/v3/__https://paypa1.example/login?x=1__;!!G2kpM7uM!abc$",
        f"https://l.facebook.com/l.php?u={quote(_TARGET, safe='')}&h=AT0",
        f"https://www.youtube.com/redirect?q={quote(_TARGET, safe='')}&v=x",
        f"https://r.eu-west-1.awstrack.me/L0/{quote(_TARGET, safe='')}/1/0102abc/xyz=123",
    ],
)
def test_wrapper_unwrapped_to_target(wrapped: str) -> None:
    assert unwrap(wrapped) == _TARGET


def test_proofpoint_v3_replaced_characters_restored() -> None:
    # "*" stands for a character given after "__;" in base64url ("?" here).
    coded = base64.urlsafe_b64encode(b"?").decode().rstrip("=")
    url = f"https://urldefense.com/v3/__https://paypa1.example/login*x=1__;{coded}!!id$"
    assert unwrap(url) == _TARGET


def test_google_amp_viewer_unwrapped() -> None:
    assert unwrap("https://www.google.com/amp/s/paypa1.example/login") == (
        "https://paypa1.example/login"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://t.co/abcdef",  # opaque: the target is not in the link
        "https://google.evil.test/url?q=https://x.test/",  # not Google's host
        "https://www.google.com/search?q=https://x.test/",  # a search, no redirect
        "https://www.bing.com/ck/a?u=zzhttps://x.test/",  # not the a1 encoding
        "https://www.bing.com/ck/a?u=a1%%%%",  # broken base64
    ],
)
def test_not_a_wrapper_left_alone(url: str) -> None:
    assert unwrap(url) == url


def test_wrapped_phishing_target_is_judged() -> None:
    wrapped = f"https://www.google.com/url?q={quote(_TARGET, safe='')}"
    got = names(scan(build(html=f'<p>Hello</p><a href="{wrapped}">Open</a>')))
    assert "link-brand-lookalike" in got


def test_safelinks_rewritten_ham_has_no_text_mismatch() -> None:
    # Before unwrapping, the anchor showing www.example.com and leading to
    # *.safelinks.protection.outlook.com raised link-text-mismatch.
    wrapped = (
        "https://nam12.safelinks.protection.outlook.com/?url="
        + quote("https://www.example.com/news", safe="")
        + "&data=05%7C01&sdata=abc&reserved=0"
    )
    html = f'<p>Our newsletter</p><a href="{wrapped}">www.example.com/news</a>'
    got = names(scan(build(html=html)))
    assert not {"link-text-mismatch", "link-action-foreign"} & got


def test_anchor_text_showing_a_wrapper_is_unwrapped_too() -> None:
    shown = "https://urldefense.com/v3/__https://www.example.com/x__;!!abc$"
    got = names(scan(build(html=f'<p>See</p><a href="https://www.example.com/x">{shown}</a>')))
    assert "link-text-mismatch" not in got


def test_wrapper_hiding_a_mismatch_still_mismatches() -> None:
    wrapped = f"https://www.google.com/url?q={quote('https://evil.test/', safe='')}"
    got = names(scan(build(html=f'<p>Hi</p><a href="{wrapped}">www.example.com</a>')))
    assert "link-text-mismatch" in got


def test_unwrap_links_keeps_source_and_anchor() -> None:
    link = Link(f"https://l.facebook.com/l.php?u={quote(_TARGET, safe='')}", "href", "Open")
    (out,) = unwrap_links([link]).links
    assert (out.url, out.source, out.anchor_text) == (_TARGET, "href", "Open")


def test_nested_wrappers_unwrapped_within_the_limit() -> None:
    url = _TARGET
    for _ in range(MAX_UNWRAPS):
        url = "https://www.google.com/url?q=" + quote(url, safe="")
    assert unwrap(url) == _TARGET


def test_deeper_nesting_stops_at_the_limit_in_time() -> None:
    url = _TARGET
    for _ in range(50):
        url = "https://www.google.com/url?q=" + quote(url, safe="")
    start = time.monotonic()
    final = unwrap(url)
    assert time.monotonic() - start < 1.0
    assert final.startswith("https://www.google.com/url?q=")  # judged as the wrapper it is


def test_self_redirect_loop_ends() -> None:
    # A redirect naming itself cannot unwrap forever.
    loop = "https://www.google.com/url?q=https://www.google.com/url"
    start = time.monotonic()
    unwrap(loop)
    assert time.monotonic() - start < 1.0


def test_deep_wrapper_chain_is_a_limit_not_a_clean_google_link() -> None:
    url = _TARGET
    for _ in range(MAX_UNWRAPS + 1):
        url = "https://www.google.com/url?q=" + quote(url, safe="")
    verdict = scan(build(html=f'<p>Hi</p><a href="{url}">Open</a>'))
    assert "limit-redirects" in names(verdict)
    assert verdict.action != "pass"


def test_over_long_wrapper_is_a_limit() -> None:
    url = "https://www.google.com/url?q=" + quote(_TARGET + "?" + "a" * MAX_WRAPPED_URL_CHARS)
    assert "limit-redirects" in names(scan(build(html=f'<p>Hi</p><a href="{url}">Open</a>')))


def test_honest_wrappers_are_no_limit() -> None:
    url = "https://www.google.com/url?q=" + quote("https://www.example.com/", safe="")
    assert "limit-redirects" not in names(scan(build(html=f'<a href="{url}">Open</a>')))


@pytest.mark.parametrize(
    "url",
    [
        "https://www.google.com/url?q=https://evil.test/x",
        "https://www.google.co.uk/amp/s/evil.test/x",
        _bing("https://evil.test/x"),
        "https://www.googleadservices.com/pagead/aclk?sa=L&adurl=https://evil.test/x",
    ],
)
def test_search_and_ad_redirects_elsewhere_are_open_redirects(url: str) -> None:
    assert "link-open-redirect" in names(scan(build(html=f'<p>Hi</p><a href="{url}">Open</a>')))


@pytest.mark.parametrize(
    "url",
    [
        "https://www.google.com/url?q=https://meet.google.com/abc-defg-hij",  # Google's own
        "https://eur03.safelinks.protection.outlook.com/?url=https://evil.test/x",  # a gateway
        "https://urldefense.com/v3/__https://evil.test/x__;!!a$",
        "https://r.us-east-1.awstrack.me/L0/https:%2F%2Fwww.example.com%2F/1/abc",  # an ESP
    ],
)
def test_gateways_and_own_redirects_are_no_open_redirects(url: str) -> None:
    assert "link-open-redirect" not in names(scan(build(html=f'<a href="{url}">Open</a>')))


def test_translate_proxy_host_is_unwrapped() -> None:
    url = "https://secure--login-paypa1-example.translate.goog/x?_x_tr_sl=auto&_x_tr_tl=en"
    assert unwrap(url) == "https://secure-login.paypa1.example/x?_x_tr_sl=auto&_x_tr_tl=en"
    got = names(scan(build(html=f'<p>Hi</p><a href="{url}">Open</a>')))
    assert {"link-open-redirect", "link-brand-lookalike"} <= got


def test_google_mail_through_googles_redirect_is_no_open_redirect() -> None:
    url = "https://www.google.com/url?q=https://zoom.example/j/1&sa=D&source=calendar"
    message = build(
        html=f'<a href="{url}">Join</a>',
        sender="Google Calendar <calendar-notification@google.com>",
    )
    assert "link-open-redirect" not in names(scan(message))
