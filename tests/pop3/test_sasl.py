"""SASL PLAIN / LOGIN decoding (RFC 4616, RFC 5034)."""

from __future__ import annotations

import base64

import pytest

from popproxy.pop3.sasl import (
    MAX_SASL_FIELD,
    MECHANISMS,
    Credentials,
    b64decode_response,
    decode_plain,
    login_challenge,
    valid_login_field,
)


def test_mechanisms() -> None:
    assert MECHANISMS == ("PLAIN", "LOGIN")


# ------------------------------------------------------------------ base64


def test_b64_valid() -> None:
    assert b64decode_response(base64.b64encode(b"\0bob\0secret")) == b"\0bob\0secret"


def test_b64_equals_sign_is_an_empty_response() -> None:
    assert b64decode_response(b"=") == b""


def test_b64_empty_line_decodes_to_empty() -> None:
    # Documented by this test: an empty line is valid (empty) base64, not an error.
    assert b64decode_response(b"") == b""


@pytest.mark.parametrize(
    "line",
    [
        b"!!!!",  # not in the alphabet
        b"Ym9i\x00",
        b"QQ",  # missing padding
        b"QQ=",
        b"Q",
        b"Ym9i ",  # whitespace is not skipped (validate=True)
        b" Ym9i",
        b"Ym9i\r",
        b"Ym9i\n",
        b"==",
        b"*",  # the cancel line is handled by the caller, it is not base64
        "Ym9iä".encode(),
        b"Ym9i=Ym9i",  # padding in the middle
    ],
)
def test_b64_invalid(line: bytes) -> None:
    assert b64decode_response(line) is None


def test_b64_urlsafe_alphabet_is_refused() -> None:
    data = b"\xfb\xff\xbf"
    assert b64decode_response(base64.urlsafe_b64encode(data)) is None
    assert b64decode_response(base64.b64encode(data)) == data


# ------------------------------------------------------------------ PLAIN


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"\0bob\0secret", Credentials(b"bob", b"secret")),
        (b"bob\0bob\0secret", Credentials(b"bob", b"secret")),  # authzid == authcid
        (b"\0bob\0pass with spaces", Credentials(b"bob", b"pass with spaces")),
        ("\0jürgen\0pässword".encode(), Credentials("jürgen".encode(), "pässword".encode())),
        (b"\0" + b"u" * 255 + b"\0" + b"p" * 255, Credentials(b"u" * 255, b"p" * 255)),
    ],
)
def test_plain_valid(message: bytes, expected: Credentials) -> None:
    assert decode_plain(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        b"admin\0bob\0secret",  # acting as someone else: the proxy does not allow it
        b"bob\0\0secret",  # empty authcid
        b"\0bob\0",  # empty password
        b"\0\0",
        b"bob\0secret",  # two fields
        b"bobsecret",
        b"",
        b"\0bob\0sec\0ret",  # NUL inside the password: four fields
        b"\0bob\0secret\0",
        b"\0" + b"u" * 256 + b"\0p",  # authcid too long
        b"\0u\0" + b"p" * 256,  # password too long
        b"BOB\0bob\0secret",  # authzid comparison is exact
    ],
)
def test_plain_invalid(message: bytes) -> None:
    assert decode_plain(message) is None


def test_plain_through_base64() -> None:
    line = base64.b64encode(b"\0bob\0hunter2")
    decoded = b64decode_response(line)
    assert decoded is not None
    assert decode_plain(decoded) == Credentials(b"bob", b"hunter2")


# ------------------------------------------------------------------ LOGIN


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"bob", True),
        (b"pass with spaces", True),
        (b"x" * MAX_SASL_FIELD, True),
        (b"x" * (MAX_SASL_FIELD + 1), False),
        (b"", False),
        (b"bo\0b", False),
        (b"bob\r", False),
        (b"bob\nDELE 1", False),
        (b"bob\r\nDELE 1", False),
        ("jürgen".encode(), True),
    ],
)
def test_valid_login_field(value: bytes, valid: bool) -> None:
    assert valid_login_field(value) is valid


def test_login_challenges() -> None:
    assert base64.b64decode(login_challenge(0)) == b"Username:"
    assert base64.b64decode(login_challenge(1)) == b"Password:"
    assert login_challenge(0) == b"VXNlcm5hbWU6"
    assert login_challenge(1) == b"UGFzc3dvcmQ6"


# ------------------------------------------------------------------ Credentials


def test_credentials_repr_hides_the_password() -> None:
    creds = Credentials(b"bob", b"hunter2-very-secret")
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}", repr([creds])):
        assert "hunter2" not in text
        assert "bob" in text


def test_credentials_are_frozen_values() -> None:
    creds = Credentials(b"bob", b"pw")
    assert creds == Credentials(b"bob", b"pw")
    assert creds != Credentials(b"bob", b"other")
    with pytest.raises(AttributeError):
        creds.password = b"x"  # type: ignore[misc]
