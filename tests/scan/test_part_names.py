"""Names of the parts defang writes: bounded, printable, parsed alike by every reader."""

from __future__ import annotations

from popproxy.scan.part_names import MAX_NAME_CHARS, name_param, shown_name, text_name


def test_text_name() -> None:
    assert text_name("page.html") == "page.html.txt"
    assert text_name("notes.TXT") == "notes.TXT"
    assert text_name("\x00\x07") == "attachment.txt"
    assert len(text_name("a" * 1000)) == MAX_NAME_CHARS + len(".txt")
    assert shown_name(" x\u202ey ") == "xy"


def test_name_param_quotes_ascii_and_encodes_the_rest() -> None:
    assert name_param("filename", "a b.txt") == 'filename="a b.txt"'
    assert name_param("name", 'q"x') == "name*=utf-8''q%22x"
    assert name_param("name", "\u00e9.txt") == "name*=utf-8''%C3%A9.txt"
