"""The linear MIME parameter splitter that replaces the stdlib's quadratic one (moved from
test_defang_attachments.py; the scanner-only install is checked in test_mime_parse.py)."""

from __future__ import annotations

import email.message
import time

from hypothesis import given
from hypothesis import strategies as st

from popproxy.scan.mime_params import install, parse_params, split_params

SPLIT_SECONDS = 1.0  # ~0.05 s measured for 200,000 semicolons; the stdlib took ~30 s


_PARAM_CHARS = st.text(alphabet=';"\\= aB\t', max_size=40)


@given(_PARAM_CHARS)
def test_linear_parameter_splitter_matches_the_stdlib(value: str) -> None:
    """mime_params replaces email.message._parseparam (quadratic): same pieces, always."""
    assert parse_params(value) == _stdlib_parseparam(value)


def _stdlib_parseparam(s: str) -> list[str]:
    """email.message._parseparam of Python 3.11, copied as the reference."""
    s = ";" + str(s)
    plist = []
    while s[:1] == ";":
        s = s[1:]
        end = s.find(";")
        while end > 0 and (s.count('"', 0, end) - s.count('\\"', 0, end)) % 2:
            end = s.find(";", end + 1)
        if end < 0:
            end = len(s)
        f = s[:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1 :].strip()
        plist.append(f.strip())
        s = s[end:]
    return plist


def test_stdlib_get_param_uses_the_linear_splitter() -> None:
    msg = email.message.Message()
    msg["Content-Type"] = 'text/html; x="' + ";" * 200_000 + '"; charset=utf-8'
    assert msg.get_content_charset() == "utf-8"


def test_split_params_keeps_pieces_and_quoted_semicolons() -> None:
    value = 'text/html; charset="a;b" ;name = "x.htm"'
    assert split_params(value) == ["text/html", ' charset="a;b" ', 'name = "x.htm"']
    assert parse_params(value) == ["text/html", 'charset="a;b"', 'name="x.htm"']


def test_a_huge_parameter_list_splits_in_linear_time() -> None:
    value = "text/plain" + "; a=b" * 200_000
    start = time.perf_counter()
    assert len(parse_params(value)) == 200_001
    assert time.perf_counter() - start < SPLIT_SECONDS


def test_install_is_idempotent() -> None:
    install()
    install()
    msg = email.message.Message()
    msg["Content-Type"] = "text/plain; CHARSET = utf-8"
    assert msg.get_content_charset() == "utf-8"
