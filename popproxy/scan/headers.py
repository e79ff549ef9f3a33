"""Byte-level header edits for the tag action: the body is never parsed or re-encoded.

Editing the raw header block keeps every byte of the body (and signatures over it) intact, and
costs one copy of the message instead of a parse and a re-serialisation.
"""

from __future__ import annotations

OWN_PREFIX = b"x-popproxy-"


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
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


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
    for i, f in enumerate(fields):
        if field_name(f) == b"subject":
            value = f.split(b":", 1)[1].lstrip(b" \t")
            if not value.startswith(prefix):
                fields[i] = b"Subject: " + prefix + b" " + value
            return fields
    return [*fields, b"Subject: " + prefix + sep]


def fold_list(name: str, items: list[str], sep: bytes) -> bytes:
    """A header field with one item per folded line (RFC 5322 section 2.2.3 folding)."""
    joined = ("," + sep.decode("ascii") + " ").join(items)
    return f"{name}: {joined}".encode("ascii", "replace")
