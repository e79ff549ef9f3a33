"""Redaction of the client's lines, whole and one byte at a time.

A script is a list of reads, each with the session's SASL mode at that read (its state's
``in_sasl``: True while the proxy waits for an AUTH response).  Fed one byte at a time, every
byte of a read keeps that read's mode, as the session would see it.
"""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy.capture.redact import MAX_LINE, PLACEHOLDER, ClientRedactor, redact_command
from popproxy.pop3 import limits

PASSWORD = b"S3cret Pa55"
Script = list[tuple[bytes, bool]]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


PLAIN = b64(b"\0alice\0" + PASSWORD)  # RFC 4616: authzid NUL authcid NUL passwd


def run(script: Script, *, bytewise: bool) -> bytes:
    redactor = ClientRedactor()
    out = b""
    for data, sasl in script:
        if bytewise:
            for i in range(len(data)):
                out += redactor.feed(data[i : i + 1], sasl)
        else:
            out += redactor.feed(data, sasl)
    return out + redactor.finish()


def secrets_absent(out: bytes) -> None:
    for secret in (PASSWORD, b"S3cret", PLAIN, b64(PASSWORD), PLAIN[8:-4]):
        assert secret not in out, out


CASES: dict[str, tuple[Script, bytes]] = {
    "user-pass": (
        [(b"USER alice\r\n", False), (b"PASS " + PASSWORD + b"\r\n", False), (b"STAT\r\n", False)],
        b"USER alice\r\nPASS ***\r\nSTAT\r\n",
    ),
    "lower-case and bare LF": (
        [(b"pass " + PASSWORD + b"\n", False), (b"stat\n", False)],
        b"pass ***\nstat\n",
    ),
    "auth-plain-initial-response": (
        [(b"AUTH PLAIN " + PLAIN + b"\r\n", False), (b"STAT\r\n", False)],
        b"AUTH PLAIN ***\r\nSTAT\r\n",
    ),
    "auth-plain-continuation": (
        [(b"AUTH PLAIN\r\n", False), (PLAIN + b"\r\n", True), (b"STAT\r\n", False)],
        b"AUTH PLAIN\r\n***\r\nSTAT\r\n",
    ),
    "auth-login-two-continuations": (
        [(b"AUTH LOGIN\r\n", False), (b64(b"alice") + b"\r\n", True),
         (b64(PASSWORD) + b"\r\n", True), (b"LIST\r\n", False)],
        b"AUTH LOGIN\r\n***\r\n***\r\nLIST\r\n",
    ),
    "auth-cancelled": (
        [(b"AUTH LOGIN\r\n", False), (b"*\r\n", True), (b"QUIT\r\n", False)],
        b"AUTH LOGIN\r\n***\r\nQUIT\r\n",
    ),
    "bare-CR line ends": (
        [(b"USER alice\rPASS " + PASSWORD + b"\rSTAT\r\n", False)],
        b"USER alice\rPASS ***\rSTAT\r\n",
    ),
    "apop": (
        [(b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n", False)],
        b"APOP alice ***\r\n",
    ),
    "pipelined-user-pass-stat": (
        [(b"CAPA\r\nUSER alice\r\nPASS " + PASSWORD + b"\r\nSTAT\r\nLIST\r\n", False)],
        b"CAPA\r\nUSER alice\r\nPASS ***\r\nSTAT\r\nLIST\r\n",
    ),
    "cut-off-mid-password": (
        [(b"USER alice\r\n", False), (b"PASS " + PASSWORD[:4], False)],
        b"USER alice\r\nPASS ***",
    ),
    "cut-off-mid-sasl": (
        [(b"AUTH PLAIN\r\n", False), (PLAIN[:10], True)],
        b"AUTH PLAIN\r\n***",
    ),
    "over-long-line": (
        [(b"PASS " + b"x" * MAX_LINE + PASSWORD + b"\r\nNOOP\r\n", False)],
        b"***\r\nNOOP\r\n",
    ),
}


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "byte-at-a-time"])
@pytest.mark.parametrize("name", list(CASES))
def test_redaction(name: str, bytewise: bool) -> None:
    script, expected = CASES[name]
    out = run(script, bytewise=bytewise)
    assert out == expected
    secrets_absent(out)


def test_lines_after_auth_in_the_same_read_are_redacted() -> None:
    """Pipelined after AUTH: the proxy cannot have answered yet, so the rest of the read may be
    SASL responses.  Over-redaction, by design."""
    script: Script = [(b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(PASSWORD) + b"\r\n",
                       False), (b"STAT\r\n", False)]
    assert run(script, bytewise=False) == b"AUTH LOGIN\r\n***\r\n***\r\nSTAT\r\n"
    one_read: Script = [(b"AUTH PLAIN " + PLAIN + b"\r\nSTAT\r\n", False)]
    assert run(one_read, bytewise=False) == b"AUTH PLAIN ***\r\n***\r\n"


def test_split_reads_keep_the_mode_of_the_line_they_complete() -> None:
    # The end of a SASL line arrives once the session is in SASL mode: redacted as a whole.
    script: Script = [(b"AUTH PLAIN\r\n" + PLAIN[:6], False), (PLAIN[6:] + b"\r\n", True)]
    out = run(script, bytewise=False)
    assert out == b"AUTH PLAIN\r\n***\r\n"
    secrets_absent(out)


def test_sasl_line_split_after_a_refused_auth_stays_redacted() -> None:
    """The proxy refused the AUTH (e.g. before TLS), so it is not in SASL mode when the rest
    of the credential line arrives: the line began in the AUTH line's read and stays secret."""
    script: Script = [(b"AUTH PLAIN\r\n" + PLAIN[:6], False), (PLAIN[6:] + b"\r\n", False)]
    out = run(script, bytewise=False)
    assert out == b"AUTH PLAIN\r\n***\r\n"
    secrets_absent(out)
    # ... and only that line: the next command, in a later read, is shown again.
    later: Script = [*script, (b"STAT\r\n", False)]
    assert run(later, bytewise=False) == b"AUTH PLAIN\r\n***\r\nSTAT\r\n"


@pytest.mark.parametrize("length", [limits.MAX_SASL_LINE - 1, limits.MAX_SASL_LINE,
                                    limits.MAX_SASL_LINE + 5])
def test_sasl_line_refused_as_too_long_stays_redacted(length: int) -> None:
    """The parser refuses a SASL line once it holds MAX_SASL_LINE octets without a line end,
    and the AUTH exchange ends: the rest of the line then arrives outside SASL mode."""
    blob = (b64(PASSWORD) * length)[:length]
    script: Script = [(b"AUTH PLAIN\r\n", False), (blob, True), (b"\r\nSTAT\r\n", False)]
    for bytewise in (False, True):
        out = run(script, bytewise=bytewise)
        assert out == b"AUTH PLAIN\r\n***\r\nSTAT\r\n"


@pytest.mark.parametrize(("line", "expected", "sasl"), [
    (b"PASS", b"PASS", False),  # nothing to hide
    (b"PASS " + PASSWORD, b"PASS ***", False),
    (b"PASSWORD " + PASSWORD, b"PASS ***", False),
    (b"  Pass\t" + PASSWORD, b"Pass ***", False),
    (b"APOP c4c9334bac560ecc979e58001b3e22fb", b"APOP ***", False),
    (b"AUTH", b"AUTH", False),  # the mechanism list
    (b"AUTH PLAIN", b"AUTH PLAIN", True),
    (b"auth plain " + PLAIN, b"auth plain ***", True),
    (b"AUTH LOGIN " + b64(b"alice") + b" extra", b"AUTH LOGIN ***", True),
    (b"AUTH " + PLAIN, b"AUTH ***", True),  # not a mechanism name (RFC 4422 s3.1)
    (b"AUTHPLAIN " + PLAIN, b"AUTH ***", True),
    (b"STAT", b"STAT", False),
    (b"USER alice", b"USER alice", False),
])
def test_redact_command(line: bytes, expected: bytes, sasl: bool) -> None:
    assert redact_command(line) == (expected, sasl)


SECRET_SCRIPT: Script = [
    (b"CAPA\r\nUSER alice\r\n", False), (b"PASS " + PASSWORD + b"\r\n", False),
    (b"AUTH PLAIN " + PLAIN + b"\r\n", False),
    (b"AUTH LOGIN\r\n", False), (b64(b"alice") + b"\r\n", True), (b64(PASSWORD) + b"\r\n", True),
    (b"APOP alice c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\n", False),
]


@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=200))
def test_any_split_gives_the_same_redaction(sizes: list[int]) -> None:
    """Reads of any size (a read never spans two modes) redact like whole reads."""
    redactor, out = ClientRedactor(), b""
    sizes_iter = itertools.cycle(sizes)
    for data, sasl in SECRET_SCRIPT:
        start = 0
        while start < len(data):
            size = next(sizes_iter)
            out += redactor.feed(data[start : start + size], sasl)
            start += size
    out += redactor.finish()
    assert out == run(SECRET_SCRIPT, bytewise=False)
    secrets_absent(out)
    assert out.count(PLACEHOLDER) == 5
