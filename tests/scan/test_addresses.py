"""Signals of the address headers: brand impersonation in the display name, malformed or
impossible senders, replies diverted to a free mailbox, and the recipient's address in the
Subject.  Moved from test_content.py and test_lure_sender_signals.py; the Mailman "via"
regression stays in test_modern_ham.py."""

from __future__ import annotations

import pytest

from popproxy.scan.addresses import (
    free_mailbox_sender,
    list_rewritten_from,
    recipient_signals,
    sender_signals,
)
from popproxy.scan.header_facts import HeaderFacts
from popproxy.scan.settings import DEFAULT_PROTECTED_BRANDS, DEFAULT_SENDER_BRANDS, ProtectedBrand
from popproxy.scan.verdict import Signal

ALL_BRANDS = DEFAULT_PROTECTED_BRANDS + DEFAULT_SENDER_BRANDS


def _sender(from_: str, reply_to: str = "",
            brands: tuple[ProtectedBrand, ...] = DEFAULT_PROTECTED_BRANDS) -> set[str]:
    return {s.name for s in sender_signals(HeaderFacts.parse(from_=from_, reply_to=reply_to),
                                           brands)}


@pytest.mark.parametrize(
    ("from_", "reply_to", "expected"),
    [
        ('"PayPal" <service@paypal.com>', "", set()),
        ('"PayPal Service" <service@mailer.example.net>', "", {"sender-brand-mismatch"}),
        ("Microsoft Team <ms.team.1@gmail.com>", "", {"sender-brand-freemail"}),
        ("Microsoft account team ,_<no-reply@evil.test>", "", {"sender-brand-mismatch",
                                                               "sender-malformed"}),
        ("Prize Desk, winner <desk@example.net>", "", {"sender-malformed"}),
        ('"Doe, John" <john@example.org>', "", set()),
        ('"support@bank.example" <x@evil.test>', "", {"sender-display-address"}),
        ("Alice <alice@example.org>", "claims.dept@gmail.com", {"reply-to-freemail"}),
        ("Alice <alice@gmail.com>", "alice@gmail.com", set()),
        ("Pineapple Weekly <news@example.org>", "", set()),
    ],
)
def test_sender(from_: str, reply_to: str, expected: set[str]) -> None:
    assert _sender(from_, reply_to) == expected


def test_subject_with_recipient_address() -> None:
    def signals(to: str, subject: str) -> list[Signal]:
        return recipient_signals(HeaderFacts.parse(to=to, subject=subject))

    assert signals("Bob <bob@example.net>", "bob@example.net: your parcel")
    assert not signals("Bob <bob@example.net>", "your parcel")
    assert not signals("a@example.net, b@example.net", "a@example.net")


@pytest.mark.parametrize(
    ("from_", "expected"),
    [
        ("Bradesco <notificacoes@bradesco.com.br>", set()),
        ("Correios <avisos@correios.com.br>", set()),
        ("Bradesco <contato@bradesco-pontos.example.net>", {"sender-brand-mismatch"}),
        ("Walmart <offers@gift-cards.example.shop>", {"sender-brand-mismatch"}),
        # Dotless domains (local system mail, anonymised samples) are not judged.
        ("root <root@localhost>", set()),
        ("Rewards <r@bonus_77.example.com>", {"sender-bad-domain"}),
        ("Rewards <r@bonus.example-invalid>", {"sender-bad-domain"}),
        ("Customer Service <helpdesk.team.1@outlook.com>", {"sender-role-freemail"}),
        ("Maria Silva <maria.silva@gmail.com>", set()),
        ("Support <support@example.org>", set()),
    ],
)
def test_sender_line(from_: str, expected: set[str]) -> None:
    assert _sender(from_, brands=ALL_BRANDS) == expected


def test_signals_carry_their_header_field_as_evidence() -> None:
    (signal,) = sender_signals(
        HeaderFacts.parse(from_='"PayPal Service" <service@mailer.example.net>'),
        DEFAULT_PROTECTED_BRANDS)
    assert signal.name == "sender-brand-mismatch"
    assert signal.evidence.startswith("From: ")
    assert signal.detail == "paypal: mailer.example.net"


def test_free_mailbox_sender_and_list_rewrites() -> None:
    assert free_mailbox_sender(HeaderFacts.parse(from_="A <a@gmail.com>")) == "gmail.com"
    assert free_mailbox_sender(HeaderFacts.parse(from_="A <a@example.org>")) == ""
    assert not list_rewritten_from(HeaderFacts.parse(from_="Jane via Users <u@l.example>"))
