"""Recovering the parts of a multipart whose boundary is unusable, split as the stdlib
parser splits (moved from test_mime.py, where the walk that uses it is tested)."""

from __future__ import annotations

from popproxy.scan.recover import recover_multipart


def test_recover_multipart_splits_like_the_parser() -> None:
    body = (b"preamble\r\n--b \t\r\nA: 1\r\n\r\none\r\n--b\nA: 2\n\ntwo\n\n--b--\r\nepilogue\r\n")
    found = recover_multipart(body, max_parts=10)
    assert found is not None
    assert found.boundary == b"b" and found.preamble == b"preamble"
    assert found.parts == [b"A: 1\r\n\r\none", b"A: 2\n\ntwo\n"]
    assert found.epilogue == b"epilogue\r\n" and not found.truncated
    unclosed = recover_multipart(b"-- \r\n--x\r\n\r\nlast\r\n", max_parts=10)
    assert unclosed is not None and unclosed.parts == [b"\r\nlast"]
    assert unclosed.preamble == b"-- " and unclosed.epilogue is None  # "-- " is no boundary
    many = recover_multipart(b"--x\r\npart\r\n" * 5, max_parts=2)
    assert many is not None and many.parts == [b"part", b"part"] and many.truncated
    swallowed = recover_multipart(b"--x\r\n--x--\r\n--x\r\none\r\n--x--\r\n", max_parts=10)
    assert swallowed is not None and swallowed.parts == [b"one"]  # as the parser does
    assert recover_multipart(b"no delimiter\r\n--\r\n", max_parts=10) is None
