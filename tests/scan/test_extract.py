"""``scan.extract``: HTML is read the way a browser reads it (markup that fooled the old regex
tokenizer), and URLs in running text are found as a browser would open them.

Each attack hid a clickable link from the scanner (score 0, delivered as ``pass``) because a
regex disagreed with the HTML5 parsing rules a browser follows.  Each HTML test checks the link at
``html_extract`` level and through ``Scanner.scan``, where the link (an IP-literal host, which
raises ``link-ip-host``) must now be judged.
"""

from __future__ import annotations

import time

import pytest

from popproxy.scan.extract import Link, LinkSource, html_extract, refang, text_links
from tests.scan.helpers import build, names, scan

EVIL = "http://198.51.100.7/login"


def _links(html: str, source: LinkSource | None = None) -> list[str]:
    return [link.url for link in html_extract(html).links if source in (None, link.source)]


def _assert_judged(html: str) -> None:
    """Through the whole scanner: the hidden link raises its link signal."""
    verdict = scan(build(html=f"<html><body><p>Dear customer,</p>{html}</body></html>"))
    assert "link-ip-host" in names(verdict)
    assert verdict.score > 0
    assert any(s.detail == "198.51.100.7" for s in verdict.signals)


# --- end tags with attributes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        f'<style>p {{color: red}}</style x><a href="{EVIL}">Sign in</a>',
        f'<STYLE>p {{}}</STYLE foo="bar"><a href="{EVIL}">Sign in</a>',
        f'<style>p {{}}</style\t><a href="{EVIL}">Sign in</a>',
        f'<script>var a = 1;</script x=y><a href="{EVIL}">Sign in</a>',
    ],
)
def test_style_end_tag_with_attributes_does_not_hide_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


@pytest.mark.parametrize(
    "html",
    [
        f'<title>Invoice</title/><a href="{EVIL}">Open invoice</a>',
        f'<title>Invoice</title x="1"><a href="{EVIL}">Open invoice</a>',
        f'<title>Invoice</TITLE / ><a href="{EVIL}">Open invoice</a>',
    ],
)
def test_title_end_tag_with_slash_or_attributes_does_not_hide_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


# --- comment endings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        f'<!--><a href="{EVIL}">Sign in</a><!-- later comment -->',
        f'<!---><a href="{EVIL}">Sign in</a><!-- later comment -->',
        f'<!--><a href="{EVIL}">Sign in</a>',
    ],
)
def test_abruptly_closed_comment_does_not_hide_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


@pytest.mark.parametrize(
    "html",
    [
        f'<!-- note --!><a href="{EVIL}">Sign in</a><!-- x -->',
        f'<!-- note --!><a href="{EVIL}">Sign in</a>',
    ],
)
def test_bang_comment_ending_does_not_hide_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


def test_link_inside_a_real_comment_is_not_a_link() -> None:
    assert _links(f'<!-- <a href="{EVIL}">x</a> -->') == []


# --- base URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        '<base href="http://198.51.100.7/"><a href="login">Sign in</a>',
        '<base href="http://198.51.100.7/x/"><a href="/login">Sign in</a>',
        # The base applies to links written before it too (the first base in the document).
        '<a href="login">Sign in</a><base href="http://198.51.100.7/">',
        '<base href=" http://198.51.100.7/a/b"><a href="../login">Sign in</a>',
    ],
)
def test_base_href_resolves_relative_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


def test_base_href_scheme_relative_and_same_scheme_links() -> None:
    # "//host/x" takes the base's scheme; "http:login" is relative to an http base (WHATWG).
    assert _links('<base href="http://good.example/"><a href="//198.51.100.7/login">x</a>') == [
        EVIL
    ]
    assert _links('<base href="http://198.51.100.7/"><a href="http:login">x</a>') == [EVIL]


def test_only_first_base_counts_and_relative_base_is_ignored() -> None:
    html = '<base href="http://198.51.100.7/"><base href="http://good.example/"><a href="login">'
    assert _links(html) == [EVIL]
    assert _links('<base href="/dir/"><a href="login">x</a>') == ["login"]


# --- form targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        f'<form action="https://good.example/s"><button formaction="{EVIL}">Verify</button></form>',
        f'<button type=submit formaction="{EVIL}">Verify</button>',
        f"<form><button formaction={EVIL}>Verify</button></form>",
    ],
)
def test_button_formaction_is_a_form_target(html: str) -> None:
    assert EVIL in _links(html, "form")
    _assert_judged(html)


@pytest.mark.parametrize(
    "html",
    [
        f'<form><input type="image" src="b.png" formaction="{EVIL}"></form>',
        f'<form><input type="submit" value="Go" formaction="{EVIL}"></form>',
    ],
)
def test_input_image_formaction_is_a_form_target(html: str) -> None:
    assert EVIL in _links(html, "form")
    _assert_judged(html)


def test_form_action_and_password_input() -> None:
    html = f'<form action="{EVIL}"><input type="PASSWORD" name="p"><input name="u"></form>'
    page = html_extract(html)
    assert page.forms == 1
    assert page.password_inputs == 1
    assert [link.url for link in page.links if link.source == "form"] == [EVIL]
    _assert_judged(html)


# --- SVG, image maps, frames, refresh -----------------------------------------------------------


@pytest.mark.parametrize(
    "html",
    [
        f'<svg><a xlink:href="{EVIL}"><text x="0" y="15">Sign in</text></a></svg>',
        f'<svg width="9"><a href="{EVIL}"><rect width="9" height="9"/></a></svg>',
        f'<svg><g><a xlink:href="{EVIL}" href="{EVIL}"><text>Sign in</text></a></g></svg>',
    ],
)
def test_svg_anchor_xlink_href_is_a_link(html: str) -> None:
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


def test_svg_anchor_text_is_its_anchor_text() -> None:
    html = f'<svg><a xlink:href="{EVIL}"><text>www.bank.example</text></a></svg>'
    links = [link for link in html_extract(html).links if link.source == "href"]
    assert [link.anchor_text for link in links] == ["www.bank.example"]


def test_image_map_area_href_is_a_link() -> None:
    html = f'<img src="x.png" usemap="#m"><map name="m"><area shape="rect" href="{EVIL}"></map>'
    assert _links(html, "href") == [EVIL]
    _assert_judged(html)


@pytest.mark.parametrize(
    ("html", "wrap"),
    [
        (f'<iframe src="{EVIL}" width="600"></iframe>', True),
        (f'<frameset><frame src="{EVIL}"></frameset>', False),
    ],
)
def test_iframe_and_frame_src_are_links(html: str, wrap: bool) -> None:
    assert _links(html, "frame") == [EVIL]
    message = build(html=f"<html><body>{html}</body></html>" if wrap else f"<html>{html}</html>")
    assert "link-ip-host" in names(scan(message))


@pytest.mark.parametrize(
    "content",
    [
        f"0; url={EVIL}",
        f"0;URL='{EVIL}'",
        f'5 , Url = "{EVIL}"',
        f"0;{EVIL}",  # no "url=" at all: browsers redirect anyway
        f"0.5 {EVIL}",
    ],
)
def test_meta_refresh_url_is_a_link(content: str) -> None:
    html = f"<meta http-equiv=\"Refresh\" content=\"{content.replace(chr(34), '&quot;')}\">"
    assert _links(html, "refresh") == [EVIL]
    _assert_judged(html)


# --- what is visible text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden",
    [
        "<script>var u = 'http://198.51.100.9/x'; // verify your account</script>",
        "<style>/* verify your account http://198.51.100.9/x */</style>",
        "<title>verify your account http://198.51.100.9/x</title>",
        "<!-- verify your account http://198.51.100.9/x -->",
        "<template><p>verify your account http://198.51.100.9/x</p></template>",
    ],
)
def test_invisible_text_is_not_visible_text(hidden: str) -> None:
    page = html_extract(f"<p>Hello</p>{hidden}<p>Bye</p>")
    assert " ".join(page.text) == "Hello Bye"
    assert page.links == []


def test_visible_text_keeps_element_boundaries() -> None:
    page = html_extract("<p>Visit</p><p>http://198.51.100.7/login</p><p>now</p>")
    assert " ".join(page.text) == "Visit http://198.51.100.7/login now"
    assert [link.url for link in page.links] == [EVIL]


def test_entities_are_decoded_in_text_and_attributes() -> None:
    page = html_extract('<a href="http&#58;//198.51.100.7/login">Sign&nbsp;in &amp; pay</a>')
    assert page.links[0].url == EVIL
    assert page.links[0].anchor_text == "Sign in & pay"


def test_anchor_text_is_capped() -> None:
    page = html_extract(f'<a href="{EVIL}">{"word " * 200}<b>{"x" * 500}</b></a>')
    (link,) = [link for link in page.links if link.source == "href"]
    assert 0 < len(link.anchor_text) <= 200


def test_anchor_text_skips_hidden_and_nested_anchors() -> None:
    html = (
        f'<svg><a href="{EVIL}"><title>tooltip</title><text>outer</text>'
        '<a href="http://198.51.100.8/"><text>inner</text></a></a></svg>'
    )
    page = html_extract(html)
    assert [(link.url, link.anchor_text) for link in page.links if link.source == "href"] == [
        (EVIL, "outer"),
        ("http://198.51.100.8/", "inner"),
    ]


def test_counts_scripts_images_and_forms() -> None:
    page = html_extract('<img src=a><img src=b><script>1</script><svg><script>2</script></svg>')
    assert (page.images, page.scripts, page.forms) == (2, 2, 0)


def test_unclosed_anchor_runs_to_its_parent_end() -> None:
    page = html_extract(f'<p><a href="{EVIL}">www.bank.example</p><p>more</p>')
    assert page.links[0] == Link(EVIL, "href", "www.bank.example")


# --- markup whose tree would be too costly to build ---------------------------------------------
# Tree construction is quadratic in nesting depth and in formatting elements re-opened after
# each block; Lexbor's C code cannot be interrupted.  Such markup is read from its source
# instead: the links are still judged, and the page is marked ``unparsed``.

_SLOW = 3.0  # seconds; each input below cost Lexbor 8 s to many minutes before


def _timed_extract(html: str) -> tuple[float, list[str], bool]:
    start = time.perf_counter()
    page = html_extract(html)
    return time.perf_counter() - start, [link.url for link in page.links], page.unparsed


@pytest.mark.parametrize(
    "bomb",
    [
        "<div>" * 100_000,
        "<ul>" * 100_000,
        "<svg>" + "<g>" * 50_000 + "</x>" * 50_000,
        "<p>" + "".join(f"<font id={i}>" for i in range(5_000)) + "</p>" + "<p>x" * 40_000,
        "".join(f"<b id={i}>" for i in range(40_000)),
        "<p " + " ".join(f"a{i}=1" for i in range(40_000)) + ">",
    ],
    ids=["nested-div", "nested-ul", "svg-end-tags", "formatting-reopened", "formatting-many",
         "distinct-attributes"],
)
def test_parser_complexity_bomb_does_not_hide_link(bomb: str) -> None:
    html = f'<a href="{EVIL}">Sign in</a>{bomb}<a href="https:paypa1.example/login">x</a>'
    spent, urls, unparsed = _timed_extract(html)
    assert spent < _SLOW
    assert unparsed
    assert EVIL in urls
    assert "https:paypa1.example/login" in urls
    verdict = scan(build(html=html))
    assert {"link-ip-host", "link-brand-lookalike"} <= names(verdict)


def test_select_with_many_options_parses_quickly() -> None:
    html = "<select>" + "<option>" * 60_000 + f'</select><a href="{EVIL}">Sign in</a>'
    spent, urls, unparsed = _timed_extract(html)
    assert spent < _SLOW
    assert not unparsed
    assert urls == [EVIL]


def test_unparsed_markup_keeps_link_attributes_base_and_counts() -> None:
    html = (
        '<BASE HREF="http://198.51.100.7/"><a title="x>y" href=login>Sign in</a>'
        "<svg><a xlink:href='http://198.51.100.8/s'>s</a></svg>"
        '<form action="/post"><input type=password><button formaction="http://198.51.100.9/f">'
        "<img src=x><script>var u = 'http://198.51.100.10/js'</script>"
        "<p>please verify your account</p>" + "<div>" * 100_000
    )
    page = html_extract(html)
    assert page.unparsed
    assert [(link.url, link.source) for link in page.links if link.source != "text"] == [
        ("http://198.51.100.7/", "href"),  # the base itself, read as a link attribute
        (EVIL, "href"),
        ("http://198.51.100.8/s", "href"),
        ("http://198.51.100.7/post", "form"),
        ("http://198.51.100.9/f", "form"),
    ]
    assert "http://198.51.100.10/js" in [link.url for link in page.links]
    assert (page.forms, page.password_inputs, page.images, page.scripts) == (1, 1, 1, 1)
    assert "please verify your account" in " ".join(page.text)


def test_honest_large_newsletter_shape_is_parsed() -> None:
    row = '<tr><td><font face="Arial"><b>Item</b></font></td><td><a href="/x">more</a></td></tr>'
    html = "<table>" + row * 3000 + "</table>"
    assert not html_extract(html).unparsed


# --- links in running text (moved from test_urls.py) --------------------------------------------
IP = "198.51.100.7"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        (f"https:\\\\{IP}\\login", f"https:\\\\{IP}\\login"),
        (f"HTTPS://{IP}/login", f"HTTPS://{IP}/login"),
        (f"http:/{IP}/login.", f"http:/{IP}/login"),
        ("hxxps[://]evil[.]test/x", "https://evil.test/x"),  # refanged as before
    ],
)
def test_text_links_find_what_a_browser_opens(text: str, url: str) -> None:
    assert [link.url for link in text_links(f"Please open {text} today")] == [url]


def test_text_bare_scheme_without_slash_is_not_a_link() -> None:
    # "http:80" in prose: no mail client makes a link of it, and it would read as 0.0.0.80.
    assert text_links("the proxy listens on http:8080 and https:443") == []


def test_obfuscated_links_are_refanged_and_marked() -> None:
    (link,) = text_links("go to hxxps://evil[.]example(dot)test/x now", attachment=True)
    assert (link.url, link.obfuscated, link.attachment) == (
        "https://evil.example.test/x", True, True)
    assert refang("h[xx]ps[://]a[.]b") == "https://a.b"


def test_www_links_get_a_scheme_and_lose_trailing_punctuation() -> None:
    assert [link.url for link in text_links("See www.example.test/a, or (https://b.test/).")] == [
        "http://www.example.test/a", "https://b.test/"]
