"""HeaderFacts: the address headers decoded and parsed once per message."""

from __future__ import annotations

import email.utils

import pytest

from popproxy.scan import header_facts
from popproxy.scan.header_facts import NO_HEADERS, HeaderFacts, domain_of, mailboxes
from popproxy.scan.mime_parse import parse_message
from tests.scan.helpers import build, names, scan

_MESSAGE = (
    b"From: =?utf-8?Q?Doe=2C_Jane?= <jane@Example.ORG>\r\n"
    b"Reply-To: Jane <jane.roe@gmail.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"List-Id: <users.lists.example.org>\r\n"
    b"\r\n"
    b"Hello\r\n"
)


def test_a_message_s_headers_are_decoded_and_parsed() -> None:
    facts = HeaderFacts.of(parse_message(_MESSAGE))
    assert facts.from_ == "Doe, Jane <jane@Example.ORG>"
    assert facts.raw_from == "=?utf-8?Q?Doe=2C_Jane?= <jane@Example.ORG>"
    assert facts.subject == "Grüße"
    assert facts.list_id == "<users.lists.example.org>"
    assert facts.reply_to_boxes == (("Jane", "jane.roe@gmail.com"),)
    assert facts.to_boxes == (("Bob", "bob@example.net"),)
    assert facts.sender_domain == "example.org"


def test_absent_headers_are_empty() -> None:
    facts = HeaderFacts.of(parse_message(b"Subject: x\r\n\r\nbody\r\n"))
    assert (facts.from_, facts.raw_from, facts.sender_domain) == ("", "", "")
    assert facts.from_boxes == facts.to_boxes == ()
    assert HeaderFacts.parse() == NO_HEADERS


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("a@b.example", "b.example"),
        ("a@B.Example.", "b.example"),
        ("@b.example", ""),  # no local part
        ("root@localhost", ""),  # dotless: local mail, anonymised samples
        ("a@bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_domain_of(address: str, domain: str) -> None:
    assert domain_of(address) == domain


def test_sender_domain_is_the_last_address_s() -> None:
    facts = HeaderFacts.parse(from_="a@first.example, b@second.example")
    assert facts.sender_domain == "second.example"
    assert mailboxes("") == ()


def test_a_scan_parses_each_address_header_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """From, Reply-To and To are read by several rules; getaddresses runs once per header."""
    calls: list[str] = []

    def counting(fields: list[str]) -> list[tuple[str, str]]:
        calls.extend(fields)
        return email.utils.getaddresses(fields)

    monkeypatch.setattr(header_facts, "getaddresses", counting)
    message = build(
        text="You are the next of kin. Dear bob@example.net, reply now.",
        sender="Jane <jane@example.org>",
        headers=(("Reply-To", "jane.roe@gmail.com"),),
    )
    verdict = scan(message)
    assert {"lure-advance-fee", "advance-fee-freemail", "reply-to-freemail"} <= names(verdict)
    assert sorted(calls) == sorted(["Jane <jane@example.org>", "jane.roe@gmail.com",
                                    "bob@example.net"])
