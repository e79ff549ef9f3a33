"""Lure wording, sender-line and image-only signals, each on a small synthetic message (the
table of sender lines itself is in test_addresses.py)."""

from __future__ import annotations

import pytest

from popproxy.scan import ScanSettings
from popproxy.scan.content import greeting_signals
from popproxy.scan.header_facts import HeaderFacts
from popproxy.scan.lures import lure_signals
from tests.scan.helpers import build, load, names, scan


@pytest.mark.parametrize(
    ("filename", "signal"),
    [
        ("lure_delivery.eml", "lure-delivery"),
        ("lure_delivery_pt.eml", "lure-delivery"),
        ("lure_advance_fee.eml", "lure-advance-fee"),
        ("lure_crypto.eml", "lure-crypto"),
        ("greeting_address.eml", "greeting-address"),
        ("greeting_recipient.eml", "greeting-address"),
        ("sender_bad_domain.eml", "sender-bad-domain"),
        ("sender_spelled_out.eml", "sender-bad-domain"),
        ("sender_role_freemail.eml", "sender-role-freemail"),
        ("sender_brand_display.eml", "sender-brand-mismatch"),
        ("html_image_only.eml", "html-image-only"),
        ("image_link_shortened.eml", "image-link-shortened"),
        ("link_action_foreign.eml", "link-action-foreign"),
    ],
)
def test_signal_fires_on_its_sample(filename: str, signal: str) -> None:
    assert signal in names(scan(load(filename)))


@pytest.mark.parametrize(
    "filename",
    [
        "lure_delivery.eml",
        "lure_crypto.eml",
        "greeting_address.eml",
        "sender_role_freemail.eml",
        "html_image_only.eml",
    ],
)
def test_one_weak_signal_alone_does_not_tag(filename: str) -> None:
    # Each of these is a single kind of evidence: it must not reach the tag threshold alone.
    assert scan(load(filename)).action == "pass"


def test_advance_fee_story_from_a_free_mailbox_tags() -> None:
    verdict = scan(load("lure_advance_fee.eml"))
    assert {"lure-advance-fee", "advance-fee-freemail"} <= names(verdict)
    assert verdict.action == "tag"


def test_advance_fee_story_from_an_own_domain_is_one_signal() -> None:
    text = "I am contacting you as next of kin to my late client.\n"
    verdict = scan(build(text=text, sender="Chambers <office@chambers.example.org>"))
    assert names(verdict) == {"lure-advance-fee"}
    assert verdict.action == "pass"


def test_brand_display_name_plus_lure_tags() -> None:
    verdict = scan(load("sender_brand_display.eml"))
    assert {"sender-brand-mismatch", "lure-delivery"} <= names(verdict)
    assert verdict.action == "tag"


def test_sender_brands_can_be_switched_off() -> None:
    verdict = scan(load("sender_brand_display.eml"), ScanSettings(sender_brands=()))
    assert "sender-brand-mismatch" not in names(verdict)


def test_image_only_with_a_hidden_destination_tags() -> None:
    verdict = scan(load("image_link_shortened.eml"))
    assert {"html-image-only", "image-link-shortened", "link-shortener"} <= names(verdict)
    assert verdict.action == "tag"


def test_image_only_with_one_direct_link_is_not_shortened() -> None:
    html = (
        '<a href="https://bit.ly/3abc"><img src="https://img.example.com/b.jpg"></a>'
        '<a href="https://shop.example.com/unsubscribe">Unsubscribe</a>'
    )
    assert "image-link-shortened" not in names(scan(build(html=html)))


@pytest.mark.parametrize(
    ("anchor", "href", "fires"),
    [
        ("Sign in", "https://login-check.example.net/", True),
        ("Confirm your subscription", "https://www.bank.example.com/confirm", False),
        ("Confirm", "https://links.bank.example.com/c/1", False),
        ("Read the full story", "https://news.example.net/story", False),
        ("We will never ask you to verify your password by e-mail, read our guide",
         "https://help.example.net/", False),
    ],
)
def test_action_link_off_the_sender_domain(anchor: str, href: str, fires: bool) -> None:
    html = f'<p>Hello.</p><a href="{href}">{anchor}</a>'
    verdict = scan(build(html=html, sender="Desk <desk@bank.example.com>"))
    assert ("link-action-foreign" in names(verdict)) is fires


def test_newsletter_with_images_and_text_is_not_image_only() -> None:
    assert names(scan(load("newsletter_images_text.eml"))) == set()


def test_image_without_link_is_not_image_only() -> None:
    msg = build(html='<html><body><img src="cid:photo"><p>Holiday photo</p></body></html>')
    assert "html-image-only" not in names(scan(msg))


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("Your package could not be delivered. Pay the customs fee.", "lure-delivery"),
        ("U heeft 1 pakket in afwachting van bezorging", "lure-delivery"),
        ("Ihr Paket konnte nicht zugestellt werden", "lure-delivery"),
        ("a business proposal of US$18.5 million", "lure-advance-fee"),
        ("you are the next of kin of my late client", "lure-advance-fee"),
        ("Enter your seed phrase to restore access", "lure-crypto"),
        ("Claim your airdrop today", "lure-crypto"),
        ("Your wallet has not yet been verified", "lure-crypto"),
        ("You are the lucky winner of a mystery box", "lure-prize"),
        ("Sie wurden ausgewählt!", "lure-prize"),
        ("Gefeliciteerd, u bent geselecteerd", "lure-prize"),
        ("você possui 102 mil pontos acumulados à vencer", "lure-prize"),
        ("Ação imediata necessária", "lure-urgency"),
        ("Último aviso: tus fotos serán eliminadas", "lure-urgency"),
        ("Bevestig uw gegevens", "lure-credentials"),
        ("Atualize suas informações", "lure-credentials"),
    ],
)
def test_new_lure_wording(text: str, signal: str) -> None:
    assert signal in {s.name for s in lure_signals(text)}


@pytest.mark.parametrize(
    "text",
    [
        # Business news quotes large sums without the 419 story around them.
        "The company posted a net loss of 235 million euros ($232 million) this quarter.",
        "Revenue was 1.6 million euro (1.61 million US) in the third quarter.",
        "The delivery van was parked outside the library.",
        "The wallet app now supports dark mode.",
    ],
)
def test_ordinary_text_raises_no_new_lure(text: str) -> None:
    new = {"lure-delivery", "lure-advance-fee", "lure-crypto"}
    assert not new & {s.name for s in lure_signals(text)}


@pytest.mark.parametrize(
    ("text", "fires"),
    [
        ("Dear jo.smith@example.org, your mailbox is full", True),
        ("Oi, rodrigo@example.com.br Você tem pontos", True),
        ("Dear Jo Smith, thanks for your order", False),
        ("Write to help@example.org if you have questions. Dear all, see you", False),
    ],
)
def test_greeting_by_address(text: str, fires: bool) -> None:
    assert bool(greeting_signals(text)) is fires


@pytest.mark.parametrize(
    ("text", "to", "fires"),
    [
        # The recipient's own address, whatever its form, after a greeting.
        ("Guten Tag jo@intranet , wir gratulieren", "jo@intranet", True),
        ("Hey jo@intranet, ich sehe", "Jo <jo@intranet>", True),
        ("Hey Jo, your copy is attached", "jo@intranet", False),
        ("Reply to jo@intranet with questions.", "jo@intranet", False),
    ],
)
def test_greeting_by_recipient_address(text: str, to: str, fires: bool) -> None:
    assert bool(greeting_signals(text, HeaderFacts.parse(to=to))) is fires


def test_action_link_detail_names_the_keyword_not_the_anchor_text() -> None:
    """Details reach X-Popproxy-Reasons and the audit log: message text stays out of them."""
    html = '<p>Hi</p><a href="https://login.evil.example/x">» BESTÄTIGEN Sie jetzt «</a>'
    verdict = scan(build(html=html, sender="Bank <info@bank.example>"))
    (signal,) = [s for s in verdict.signals if s.name == "link-action-foreign"]
    assert signal.detail.endswith("tigen -> login.evil.example")  # non-ASCII is escaped
    assert "jetzt" not in signal.detail and "Sie" not in signal.detail
