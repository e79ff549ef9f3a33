"""CAPA parsing, filtering and rendering (RFC 2449 sections 5-6)."""

from __future__ import annotations

import pytest

from popproxy.pop3 import limits, replies
from popproxy.pop3.capa import (
    Capability,
    filter_upstream,
    parse_capa_body,
    proxy_capabilities,
    render_capa,
)
from popproxy.pop3.errors import RemoteProtocolError
from popproxy.pop3.events import BodyData, Command, EndOfBody, StatusLine
from popproxy.pop3.framing import Unstuffer
from tests.pop3.feeding import Feed, body_bytes, feed_framer

DOVECOT_CAPA = (
    b"CAPA\r\n"
    b"TOP\r\n"
    b"UIDL\r\n"
    b"RESP-CODES\r\n"
    b"PIPELINING\r\n"
    b"AUTH-RESP-CODE\r\n"
    b"STLS\r\n"
    b"USER\r\n"
    b"SASL PLAIN LOGIN\r\n"
    b"implementation Dovecot ready.\r\n"
    b"LOGIN-DELAY 900\r\n"
    b"EXPIRE NEVER\r\n"
)


def test_parse() -> None:
    caps = parse_capa_body(DOVECOT_CAPA)
    assert caps[:3] == (Capability("CAPA"), Capability("TOP"), Capability("UIDL"))
    assert Capability("SASL", ("PLAIN", "LOGIN")) in caps
    assert Capability("LOGIN-DELAY", ("900",)) in caps
    # Tags are case-insensitive (RFC 2449 s6) and normalised; arguments are kept as sent.
    assert Capability("IMPLEMENTATION", ("Dovecot", "ready.")) in caps
    assert len(caps) == 12


def test_parse_skips_blank_lines_and_extra_whitespace() -> None:
    body = b"\r\nTOP\r\n   \r\n  SASL   PLAIN\tLOGIN  \r\n\r\n"
    assert parse_capa_body(body) == (Capability("TOP"), Capability("SASL", ("PLAIN", "LOGIN")))


def test_parse_without_final_crlf() -> None:
    assert parse_capa_body(b"TOP\r\nUIDL") == (Capability("TOP"), Capability("UIDL"))


def test_parse_empty() -> None:
    assert parse_capa_body(b"") == ()


def test_filter_drops_what_must_not_be_relayed() -> None:
    caps = filter_upstream(parse_capa_body(DOVECOT_CAPA))
    names = [c.name for c in caps]
    for dropped in ("STLS", "IMPLEMENTATION", "SASL", "USER"):
        assert dropped not in names
    assert names == [
        "CAPA",
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "LOGIN-DELAY",
        "EXPIRE",
    ]


def test_filter_is_case_insensitive_through_parse() -> None:
    caps = filter_upstream(parse_capa_body(b"stls\r\nSasl PLAIN\r\nuser\r\nImplementation x\r\n"))
    assert caps == ()


def test_filter_keeps_order_and_arguments() -> None:
    caps = (Capability("EXPIRE", ("60", "USER")), Capability("USER"), Capability("TOP"))
    assert filter_upstream(caps) == (Capability("EXPIRE", ("60", "USER")), Capability("TOP"))


def test_render() -> None:
    caps = (Capability("TOP"), Capability("LOGIN-DELAY", ("900",)), Capability("SASL", ("A", "B")))
    assert render_capa(caps) == [b"TOP", b"LOGIN-DELAY 900", b"SASL A B"]
    assert render_capa(()) == []


def test_parse_render_round_trip() -> None:
    caps = parse_capa_body(DOVECOT_CAPA)
    assert parse_capa_body(b"\r\n".join(render_capa(caps))) == caps


def test_rendered_capa_frames_as_a_multiline_response(feed: Feed) -> None:
    lines = render_capa(filter_upstream(parse_capa_body(DOVECOT_CAPA)))
    wire = replies.ok() + replies.multiline(replies.ok("capability list follows"), lines)
    events = feed_framer(wire, feed, commands=(Command("CAPA"),))
    assert isinstance(events[1], StatusLine) and events[1].multiline
    assert events[-1] == EndOfBody()
    body = Unstuffer().feed(body_bytes(events))
    assert body == b"".join(line + b"\r\n" for line in lines)
    assert all(isinstance(e, BodyData) for e in events[2:-1])


# ------------------------------------------------------------------ hostile upstream


def test_line_of_maximum_length() -> None:
    line = b"X-" + b"A" * (limits.MAX_CAPA_LINE - 2 - 2)
    assert len(line) + 2 == limits.MAX_CAPA_LINE
    assert parse_capa_body(line + b"\r\n") == (Capability(line.decode()),)


def test_too_long_line() -> None:
    line = b"X-" + b"A" * (limits.MAX_CAPA_LINE - 2 - 1)
    with pytest.raises(RemoteProtocolError, match="too long"):
        parse_capa_body(b"TOP\r\n" + line + b"\r\n")


def test_too_long_blank_line_counts_too() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_capa_body(b" " * limits.MAX_CAPA_LINE + b"\r\n")


def test_maximum_number_of_lines() -> None:
    body = b"".join(b"X-CAP%d\r\n" % i for i in range(limits.MAX_CAPA_LINES))
    assert len(parse_capa_body(body)) == limits.MAX_CAPA_LINES


def test_too_many_lines() -> None:
    body = b"".join(b"X-CAP%d\r\n" % i for i in range(limits.MAX_CAPA_LINES + 1))
    with pytest.raises(RemoteProtocolError, match="CAPA lines"):
        parse_capa_body(body)


def test_blank_lines_do_not_count_against_the_line_limit() -> None:
    body = b"\r\n" * 500 + b"TOP\r\n"
    assert parse_capa_body(body) == (Capability("TOP"),)


@pytest.mark.parametrize("line", ["IMPLEMENTATION Dövecot".encode(), b"TOP\xff", b"\x80"])
def test_non_ascii_line(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="not ASCII"):
        parse_capa_body(b"TOP\r\n" + line + b"\r\n")


def test_bare_lf_inside_a_line_cannot_smuggle_a_second_line() -> None:
    caps = parse_capa_body(b"TOP\nSTLS\r\n")
    assert caps == (Capability("TOP", ("STLS",)),)
    assert render_capa(caps) == [b"TOP STLS"]


# RFC 2449 section 9: capa-tag = 1*cchar, cchar = %x21-2D / %x2F-7F (printable, no ".").
@pytest.mark.parametrize("line", [b".", b".FOO", b"X.Y", b"..", b"\x01TOP", b"TOP\x7f."])
def test_tag_outside_the_rfc_grammar(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="tag"):
        parse_capa_body(b"TOP\r\n" + line + b" arg\r\n")


def test_upstream_dot_line_cannot_end_our_capa_response_early() -> None:
    """A stuffed "." line from the upstream must not become an unstuffed terminator.

    Without the tag check, ``..`` unstuffs to ``.``, parses as a capability, is rendered
    unstuffed by ``replies.multiline`` and the client sees the response end there: the
    upstream could then inject what the client takes for the answers to later commands.
    """
    upstream_body = Unstuffer().feed(b"TOP\r\n..\r\n+OK injected\r\n")
    assert upstream_body == b"TOP\r\n.\r\n+OK injected\r\n"
    with pytest.raises(RemoteProtocolError):
        parse_capa_body(upstream_body)


def test_every_rendered_capability_line_is_safe_to_send_unstuffed() -> None:
    body = bytes(c for c in range(0x21, 0x80) if c != 0x2E) + b" a.b .c\r\n"
    caps = parse_capa_body(body)
    assert [line[:1] for line in render_capa(caps)] == [b"!"]
    assert caps[0].args == ("a.b", ".c")  # params may contain "." (pchar = %x21-7F)


def test_proxy_capabilities_before_tls_on_a_starttls_listener() -> None:
    # RFC 2595 section 4: STLS offered; no USER/SASL while passwords would cross in clear.
    lines = proxy_capabilities(stls_offered=True, login_allowed=False, mechanisms=["PLAIN"])
    assert lines == [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"STLS"]


def test_proxy_capabilities_once_login_is_allowed() -> None:
    lines = proxy_capabilities(stls_offered=False, login_allowed=True,
                               mechanisms=["PLAIN", "LOGIN"])
    assert lines == [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER",
                     b"SASL PLAIN LOGIN"]


def test_what_the_proxy_offers_for_login_is_never_relayed() -> None:
    ours = proxy_capabilities(stls_offered=True, login_allowed=True, mechanisms=["PLAIN"])
    login_tags = {line.split()[0].decode() for line in ours[-3:]}
    assert login_tags == {"STLS", "USER", "SASL"}
    relayed = filter_upstream(tuple(Capability(tag) for tag in login_tags))
    assert relayed == ()
