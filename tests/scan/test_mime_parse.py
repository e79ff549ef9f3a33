"""Message bytes -> parse tree, or a header-only tree marked Unparsed when the stdlib
parser could not afford the structure."""

from __future__ import annotations

import subprocess
import sys

from popproxy.scan.limits import MAX_PARSE_DELIMITERS
from popproxy.scan.mime_parse import Unparsed, parse_message, unparsed_limit

HEAD = b"From: a@example.test\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"


def test_an_ordinary_message_is_parsed_whole() -> None:
    msg = parse_message(HEAD + b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n")
    assert msg.is_multipart()
    assert [p.get_content_type() for p in msg.get_payload()] == ["text/plain"]  # type: ignore[union-attr]
    assert unparsed_limit(msg) is None


def test_too_many_delimiter_lines_leave_the_body_unparsed() -> None:
    body = b"--x\r\n\r\n" * (MAX_PARSE_DELIMITERS + 1)
    msg = parse_message(HEAD + body)
    assert unparsed_limit(msg) == "parts"
    assert msg["Subject"] == "hi"  # the header is still read
    assert any(isinstance(d, Unparsed) for d in msg.defects)


def test_nesting_past_the_stack_leaves_the_body_unparsed() -> None:
    levels = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                      % (i, i + 1) for i in range(3000))
    msg = parse_message(HEAD.replace(b"boundary=x", b"boundary=b0") + levels)
    assert unparsed_limit(msg) == "depth"


def test_malformed_mime_is_recorded_not_raised() -> None:
    msg = parse_message(b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n")
    assert msg.defects
    assert unparsed_limit(msg) is None


def test_scanner_alone_installs_the_linear_parameter_parser() -> None:
    # The scanner worker imports the scanner without the defang module; the quadratic stdlib
    # splitter (a 160 KB Content-Type: ~30 s per get_param) must be replaced there too.
    code = (
        "import email.message, popproxy.scan.scanner, sys; "
        "sys.exit(email.message._parseparam.__module__ != 'popproxy.scan.mime_params')"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
