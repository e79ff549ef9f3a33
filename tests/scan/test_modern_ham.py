"""Regression tests for false evidence seen on modern legitimate mail (issue 15, item 2).

Each message here is written for the test: an Outlook "Surname, Given" sender, a support
thread with a router's address, a Google Groups post with its javascript: placeholders, a
Mailman post with "via List" From rewriting, a link broken by leftover quoted-printable, and a
brand writing from its own marketing domain.  Each has a control that must still fire.
"""

from __future__ import annotations

import pytest

from popproxy.scan import hosts
from popproxy.scan.addresses import list_rewritten_from
from popproxy.scan.header_facts import HeaderFacts
from popproxy.scan.link_rules import script_placeholder
from tests.scan.helpers import build, names, scan


def _raw(from_line: str, body: str = "See you tomorrow.") -> bytes:
    return (
        f"From: {from_line}\r\nTo: bob@example.net\r\nSubject: meeting\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


# --- sender-malformed: a comma inside an RFC 2047 encoded-word is part of the name ---------


@pytest.mark.parametrize(
    "from_line",
    [
        "=?iso-8859-1?Q?Doe=2C_J=F6rg?= <jdoe@example.org>",
        "=?utf-8?B?RG9lLCBKYW5l?= <jdoe@example.org>",  # "Doe, Jane" in base64
        '"Doe, Jane" <jdoe@example.org>',
    ],
)
def test_encoded_surname_comma_given_is_one_sender(from_line: str) -> None:
    assert "sender-malformed" not in names(scan(_raw(from_line)))


def test_unquoted_comma_in_display_name_is_still_malformed() -> None:
    assert "sender-malformed" in names(scan(_raw("Doe, Jane <jdoe@example.org>")))


# --- link-ip-private: a local network's address is no internet landing page -----------------


@pytest.mark.parametrize(
    "url",
    [
        "http://192.168.1.1/admin",
        "http://10.20.30.40:8080/",
        "http://127.0.0.1:631/printers",
        "http://169.254.1.2/",
        "http://172.16.5.4/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
    ],
)
def test_local_network_address_link_is_private_not_ip_host(url: str) -> None:
    verdict = scan(build(text=f"The device answers at {url} after the reset."))
    assert "link-ip-private" in names(verdict)
    assert "link-ip-host" not in names(verdict)


def test_public_address_link_is_still_ip_host() -> None:
    verdict = scan(build(text="Sign in at http://198.51.100.7/login today."))
    assert "link-ip-host" in names(verdict)
    assert "link-ip-private" not in names(verdict)


def test_obfuscated_local_address_is_still_obfuscated() -> None:
    assert "link-ip-obfuscated" in names(scan(build(html='<a href="http://0x7f.1/">x</a>')))


def test_private_and_public_ip_count_once_as_the_public_one() -> None:
    html = '<a href="http://192.168.0.1/">a</a> <a href="http://198.51.100.7/">b</a>'
    verdict = scan(build(html=html))
    assert "link-ip-host" in names(verdict)
    assert verdict.score == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("address", "local"),
    [("10.1.2.3", True), ("::ffff:192.168.1.1", True), ("0.0.0.0", True),
     ("100.64.0.1", True), ("198.51.100.7", False), ("172.32.0.1", False),
     ("2001:db8::1", False), ("not an ip", False)],
)
def test_is_local_address(address: str, local: bool) -> None:
    assert hosts.is_local_address(address) is local


# --- link-script-scheme: empty or no-op javascript: placeholders do nothing -----------------


@pytest.mark.parametrize(
    "href", ["javascript:", "javascript:void(0)", "JavaScript:void(0);", " javascript:;",
             "java\tscript:", "javascript:%76oid(0)", "javascript:void 0"],
)
def test_javascript_placeholder_is_no_script_link(href: str) -> None:
    html = f'<p>On Monday, Jane &lt;<a href="{href}">jane...@example.org</a>&gt; wrote:</p>'
    assert "link-script-scheme" not in names(scan(build(html=html)))


@pytest.mark.parametrize(
    "href", ["javascript:alert(1)", "javascript:%61lert(1)", "javascript:void(alert(1))",
             "javascript://%0aalert(1)", "javascript:;location='https://evil.example/'"],
)
def test_javascript_with_code_is_still_a_script_link(href: str) -> None:
    assert not script_placeholder(href)
    html = f'<a href="{href}">Open</a>'
    assert "link-script-scheme" in names(scan(build(html=html)))


# --- reply-to-freemail: a list's "Name via List" rewrite puts the poster in Reply-To -------


def test_mailman_via_rewrite_is_not_reply_to_freemail() -> None:
    message = build(
        text="I see the same on my board.",
        sender="Jane Roe via Users <users@lists.example.org>",
        headers=(("Reply-To", "Jane Roe <jane.roe@gmail.com>"),
                 ("List-Id", "Users of the gadget <users.lists.example.org>")),
    )
    assert "reply-to-freemail" not in names(scan(message))


def test_google_groups_via_rewrite_is_not_reply_to_freemail() -> None:
    message = build(
        text="Which kernel do you run?",
        sender="'Jane Roe' via gadget-dev <gadget-dev@googlegroups.com>",
        headers=(("Reply-To", "jane.roe@gmail.com"),
                 ("List-ID", "<gadget-dev.googlegroups.com>")),
    )
    assert "reply-to-freemail" not in names(scan(message))


@pytest.mark.parametrize(
    "list_id",
    ["", "<other.lists.example.org>", "<users.lists.example.net>"],
)
def test_via_name_without_matching_list_id_is_still_reply_to_freemail(list_id: str) -> None:
    headers = [("Reply-To", "Jane Roe <jane.roe@gmail.com>")]
    if list_id:
        headers.append(("List-Id", list_id))
    message = build(text="Please reply.", sender="Jane Roe via Users <users@lists.example.org>",
                    headers=tuple(headers))
    assert "reply-to-freemail" in names(scan(message))


def test_list_rewritten_from_needs_a_via_name() -> None:
    def rewritten(from_: str) -> bool:
        return list_rewritten_from(
            HeaderFacts.parse(from_=from_, list_id="<users.lists.example.org>")
        )

    assert rewritten("Jane via Users <users@lists.example.org>")
    assert not rewritten("Users <users@lists.example.org>")
    assert not rewritten("Jane via Users <users@lists.example.org>, x@evil.example")


# --- a host must be a host name: "=" left by broken quoted-printable is no look-alike -------


def test_leftover_quoted_printable_host_is_no_lookalike() -> None:
    verdict = scan(build(html='<a href="http://paypa1.com=/">account</a>'))
    assert "link-brand-lookalike" not in names(verdict)
    control = scan(build(html='<a href="http://paypa1.com/">account</a>'))
    assert "link-brand-lookalike" in names(control)


def test_leftover_quoted_printable_host_is_no_text_mismatch() -> None:
    html = '<a href="https://www.shop.example.com=/offers">www.shop.example.com</a>'
    assert "link-text-mismatch" not in names(scan(build(html=html)))


def test_leftover_quoted_printable_host_is_not_a_foreign_action() -> None:
    html = '<a href="https://www.example.org=2Fverify">Verify</a>'
    assert "link-action-foreign" not in names(scan(build(html=html)))


@pytest.mark.parametrize(
    ("host", "valid"),
    [("www.example.org", True), ("foo_bar.example.org", True), ("xn--bcher-kva.example", True),
     ("paypal-.evil.example", True), ("www.example.org=", False), ("a%2e.example", False),
     ("a..example", False), ("x" * 64 + ".example", False)],
)
def test_is_host_name(host: str, valid: bool) -> None:
    assert hosts.is_host_name(host) is valid


# --- sender-brand-*: brands mail from their own secondary domains -------------------------


def test_brand_name_in_senders_own_domain_is_weak() -> None:
    verdict = scan(build(text="New games this week.",
                         sender="Microsoft Store <store@microsoftstoremail.example>"))
    assert "sender-brand-related" in names(verdict)
    assert "sender-brand-mismatch" not in names(verdict)
    assert verdict.score == pytest.approx(1.5)


def test_brand_name_on_unrelated_domain_is_still_a_mismatch() -> None:
    verdict = scan(build(text="Hello.", sender="Microsoft Support <help@fixit.example>"))
    assert "sender-brand-mismatch" in names(verdict)


def test_brand_name_in_a_domain_that_cannot_exist_is_still_a_mismatch() -> None:
    verdict = scan(_raw("PayPal <service@__paypal.example>"))
    assert "sender-brand-mismatch" in names(verdict)


# --- text-obfuscated: one keyboard-layout slip in a subject is no homoglyph lure -----------


def test_one_cyrillic_letter_typed_for_latin_in_subject_is_no_obfuscation() -> None:
    # A Russian keyboard's Cyrillic Es (U+0421) sits on the Latin "C" key.
    message = build(text="How do I build it?", subject="\u0421reate fpga image for the E310")
    assert "text-obfuscated" not in names(scan(message))


def test_brand_spelt_with_one_cyrillic_letter_in_subject_is_obfuscation() -> None:
    message = build(text="Hello.", subject="Your Meta\u041cask wallet is disabled")
    assert "text-obfuscated" in names(scan(message))


def test_several_mixed_script_words_in_subject_are_obfuscation() -> None:
    message = build(text="Hello.", subject="\u0405ecurity \u0430lert for your account")
    assert "text-obfuscated" in names(scan(message))


def test_via_rewrite_with_reply_to_naming_someone_else_is_still_reply_to_freemail() -> None:
    message = build(
        text="Please reply.",
        sender="Jane Roe via Users <users@lists.example.org>",
        headers=(("Reply-To", "Account Security <secure.desk@gmail.com>"),
                 ("List-Id", "<users.lists.example.org>")),
    )
    assert "reply-to-freemail" in names(scan(message))


def test_regional_brand_domain_is_weak_evidence() -> None:
    # Savings banks write from their own regional domains: sparkasse-<town>.<tld>.
    verdict = scan(build(text="Your statement is ready.",
                         sender="Sparkasse Musterstadt <info@sparkasse-musterstadt.example>"))
    assert "sender-brand-related" in names(verdict)
    assert "sender-brand-mismatch" not in names(verdict)
