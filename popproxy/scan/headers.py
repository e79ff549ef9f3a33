"""Byte-level header edits for the tag action: the body is never parsed or re-encoded.

Editing the raw header block keeps every byte of the body (and signatures over it) intact, and
costs one copy of the message instead of a parse and a re-serialisation.
"""

from __future__ import annotations

import re

OWN_PREFIX = b"x-popproxy-"

# A header line as the stdlib parser (and so the scanner) reads one: a field name of printable
# ASCII without ":" then a colon, a folded continuation line, or an mbox "From " line (skipped).
# Any other line ends the header section for that parser: what follows it is body.
# (Used with ``match``; the look-behind also keeps a ``search`` linear on a long line.)
_HEADER_LINE = re.compile(rb"From |(?<![\x21-\x39\x3b-\x7e])[\x21-\x39\x3b-\x7e]*+:|[ \t]")


def split_message(message: bytes) -> tuple[bytes, bytes, bytes]:
    """Split into (header block, line separator, body); the blank line belongs to neither.

    A message with no blank line is all header (RFC 5322 section 2.1: the body is optional).
    """
    crlf = message.find(b"\r\n\r\n")
    lf = message.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return message[:crlf], b"\r\n", message[crlf + 4 :]
    if lf != -1:
        sep = b"\r\n" if message[:lf].endswith(b"\r") else b"\n"
        return message[:lf], sep, message[lf + 2 :]
    sep = b"\r\n" if b"\r\n" in message else b"\n"
    return message.rstrip(b"\r\n"), sep, b""


def header_fields(head: bytes) -> list[bytes]:
    """The header block as a list of fields, each with its folded continuation lines."""
    fields: list[list[bytes]] = []  # lines per field, joined once: "+=" per line is quadratic
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    return [b"".join(lines) for lines in fields]


def has_own_headers(message: bytes) -> bool:
    """Whether any line of the header block (up to the first blank line) starts a field named
    ``X-Popproxy-*``, in any case: as lenient clients read it, so also after a line a strict
    parser takes for the start of the body, or with blanks before its colon."""
    head = split_message(message)[0]
    if OWN_PREFIX not in head.lower():
        return False
    return any(line[: len(OWN_PREFIX)].lower() == OWN_PREFIX for line in head.splitlines())


def field_name(field: bytes) -> bytes:
    """The lower-case name of a header field."""
    return field.split(b":", 1)[0].strip().lower()


def _terminated(field: bytes, sep: bytes) -> bytes:
    return field if field.endswith(b"\n") else field + sep


def edit_headers(
    message: bytes, new_fields: list[bytes], *, subject_prefix: bytes = b""
) -> bytes:
    """Drop our own headers (a sender could forge them), add ``new_fields`` and prefix Subject.

    Args:
        message: the message.
        new_fields: complete fields without line ending ("X-Popproxy-Verdict: tag").
        subject_prefix: ASCII prefix for the Subject ("" for none); not added twice.
    """
    head, sep, body = split_message(message)
    kept = [f for f in header_fields(head) if not field_name(f).startswith(OWN_PREFIX)]
    if subject_prefix:
        kept = _prefix_subject(kept, subject_prefix, sep)
    out = [f + sep for f in new_fields] + [_terminated(f, sep) for f in kept]
    return b"".join(out) + sep + body


def _prefix_subject(fields: list[bytes], prefix: bytes, sep: bytes) -> list[bytes]:
    """Prefix the first Subject field, or add one.

    A line without a colon ("Subject" alone) is not a Subject field.  The prefixed Subject
    must sit before the first line a strict parser would read as the start of the body, or a
    reader's client could show the message without the prefix: an existing Subject after such
    a line is moved up to it, and a new one is inserted there (at the end when there is none).
    """
    end = next((i for i, f in enumerate(fields) if not _HEADER_LINE.match(f)), len(fields))
    for i, f in enumerate(fields):
        name, colon, value = f.partition(b":")
        if not colon or name.strip().lower() != b"subject":
            continue
        value = value.lstrip(b" \t")
        new = f if value.startswith(prefix) else b"Subject: " + prefix + b" " + value
        if i <= end:
            fields[i] = new
        else:
            del fields[i]
            fields.insert(end, new)
        return fields
    fields.insert(end, b"Subject: " + prefix + sep)
    return fields


def fold_list(name: str, items: list[str], sep: bytes) -> bytes:
    """A header field with one item per folded line (RFC 5322 section 2.2.3 folding)."""
    joined = ("," + sep.decode("ascii") + " ").join(items)
    return f"{name}: {joined}".encode("ascii", "replace")
