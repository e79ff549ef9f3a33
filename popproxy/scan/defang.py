"""The defang action: every link in the text parts made inert but still readable.

text/plain: ``https://evil.example/x`` becomes ``hxxps://evil[.]example/x`` (the convention of
security notices: people can read it, no client turns it back into a link; :mod:`inert_text`).
text/html: the tree a browser builds, with every link inert and each link's target shown as
text after it (:mod:`defang_html`).  This module walks the MIME tree and writes it back.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import re
from email.message import Message
from email.utils import collapse_rfc2231_value

from popproxy.scan import sniff
from popproxy.scan.defang_html import defang_html
from popproxy.scan.header_words import decodable_tail, decode_words
from popproxy.scan.inert_text import defang_text
from popproxy.scan.limits import MAX_MIME_PARTS
from popproxy.scan.mime_params import split_params
from popproxy.scan.mime_parse import parse_message
from popproxy.scan.part_names import name_param, text_name
from popproxy.scan.recover import recover_multipart
from popproxy.scan.risky import RiskyMode, removal_note
from popproxy.scan.textdecode import decode_bytes

__all__ = ["defang_html", "defang_message", "defang_text"]

_DEFANGED_BODY_TYPES = ("text/plain", "text/html")


def defang_message(message: bytes, risky: RiskyMode = "keep") -> bytes:
    """Defang every text/plain and text/html part and re-serialise the message; ``risky``
    (``scan.risky_attachments``): strip or replace risky attachments (:mod:`.risky`).

    Parts that are not text keep their bytes (as the parser stored them); each rewritten part
    keeps its charset when the new text fits it, else becomes UTF-8.  A multipart without a
    usable boundary is rebuilt from the parts found in its body (:func:`recover_multipart`,
    as the scanner reads it) or, failing that, becomes one defanged text/plain part, so no
    client can find live links in it.

    The output is deterministic (the same message gives the same bytes: POP3 sizes depend on
    it), has CRLF line ends only, and header fields are written as they came, never re-folded:
    re-folding raises on hostile values (a 0x1C byte before "Name:") and changes nothing a
    reader needs.  Nothing here recurses per MIME level; only the stdlib parser does (it raises
    RecursionError beyond ~980 nested multiparts, a known bug of the scanner as a whole).
    """
    msg = parse_message(message)
    plan = _Plan(message, risky)
    todo: list[Message] = [msg]
    while todo:  # iterative: nesting is only bounded by the parser
        part = todo.pop()
        payload = _stored_payload(part)
        content_type = _content_type(part)
        if isinstance(payload, list):
            if content_type.startswith("multipart/"):
                plan.boundaries[id(part)] = _usable_boundary(part) or plan.new_boundary(part)
            todo.extend(c for c in payload if isinstance(c, Message))
        elif content_type.startswith("multipart/"):  # no usable boundary: one opaque text
            todo.extend(_rebuild_multipart(part, plan))
        else:
            _defang_leaf(part, content_type, plan)
        _drop_duplicates(part, plan)
    return _serialise(msg, plan)


def _defang_leaf(part: Message, content_type: str, plan: _Plan) -> None:
    """A body text is defanged in place; an attachment that could render as a page or open as
    a link (by name, type or content, :func:`sniff.active_markup`) becomes inert text; other
    attachments keep their bytes."""
    names = _file_names(part)
    body = content_type in _DEFANGED_BODY_TYPES and part.get_content_disposition() != "attachment"
    if body and sniff.risky_name(names) is None:
        _rewrite_part(part, plan)
        return
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    note = removal_note(names, raw, plan.risky) if plan.risky != "keep" else None
    if note is not None:  # before markup: a removed .hta is not kept as text
        plan.edit(part, "Content-Type", note.content_type)
        plan.edit(part, "Content-Disposition", note.disposition)
        _set_payload(part, plan, note.text)
    elif sniff.active_markup(raw, content_type, names) is not None:
        _make_text_attachment(part, plan, raw, names)
    elif content_type in _DEFANGED_BODY_TYPES:
        _rewrite_part(part, plan)


class _Plan:
    """What the serialiser writes differently from the parse tree.

    Attributes:
        edits: per part (by ``id``), header fields replaced: the first occurrence keeps its
            place and further ones are dropped, except Content-Transfer-Encoding, which moves
            to the end (as the stdlib-based defang did); a missing field is appended; None
            drops the field.
        boundaries: per multipart, the boundary its delimiter lines use; a multipart is
            always assigned one before its parts are visited.
    """

    def __init__(self, message: bytes, risky: RiskyMode = "keep") -> None:
        self.message = message
        self.risky = risky
        self.edits: dict[int, dict[str, str | None]] = {}
        self.boundaries: dict[int, bytes] = {}
        self.recovered_bytes = 0
        self._digest = ""
        self._made = 0

    def edit(self, part: Message, name: str, value: str | None) -> None:
        self.edits.setdefault(id(part), {})[name] = value

    def new_boundary(self, part: Message) -> bytes:
        """A boundary for a multipart we rewrite: deterministic, and in no line of the message.

        "=_" occurs in no quoted-printable or base64 text, and a hash of the whole original
        cannot be written into that original.
        """
        if not self._digest:
            self._digest = hashlib.sha256(self.message).hexdigest()[:32]
        boundary = f"=_popproxy_{self._digest}_{self._made}"
        self._made += 1
        self.edit(part, "Content-Type", f'multipart/{_subtype(part)}; boundary="{boundary}"')
        return boundary.encode("ascii")


_NL = re.compile(r"\r\n|\r|\n")
_STRUCTURE_FIELDS = {"content-type": "Content-Type",
                     "content-transfer-encoding": "Content-Transfer-Encoding"}
_NL_BYTES = re.compile(rb"\r\n|\r|\n")
_CRLF = b"\r\n"
# A MIME token (RFC 2045 section 5.1) and a parameter whose name and value parse the same way
# in every reader; others are dropped when we write a Content-Type.
_TOKEN_CHARS = r"!#$%&'*+.^_`|~0-9A-Za-z-"
_TOKEN = rf"[{_TOKEN_CHARS}]+"
# Possessive, and starting only where a run of blanks and token characters starts, so that even
# a search over hostile text (not just the fullmatch used here) never re-scans a run.
_CLEAN_PARAM = re.compile(rf'(?<![\s{_TOKEN_CHARS}])\s*+({_TOKEN}+)\s*+=\s*+'
                          rf'(?:"(?:[^"\\]|\\.)*+"|{_TOKEN}+)\s*+')
# multipart subtypes we keep when rewriting a Content-Type; anything else becomes "mixed".
_SUBTYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
# Raw bytes of a multipart body re-parsed to find its parts, as a multiple of the message size:
# one rebuild of the whole message, then nested broken multiparts are written as plain text.
_MAX_RECOVERED_SHARE = 1


def _stored_payload(part: Message) -> object:
    """The payload as the parser stored it: a list of parts, or a str whose 8-bit bytes are
    surrogate escapes.  ``get_payload()`` would replace those bytes (using the declared
    charset, which can make it raise), so read it as ``BytesGenerator`` does."""
    return vars(part).get("_payload")


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except (LookupError, UnicodeError, ValueError, TypeError):
        return "application/octet-stream"


def _subtype(part: Message) -> str:
    sub = _content_type(part).partition("/")[2]
    return sub if _SUBTYPE.fullmatch(sub) else "mixed"


def _usable_boundary(part: Message) -> bytes | None:
    """The boundary the parser split this multipart at, if it can be written back as is."""
    try:
        boundary = part.get_boundary()
        return boundary.encode("ascii") if boundary and boundary.isprintable() else None
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None


def _drop_duplicates(part: Message, plan: _Plan) -> None:
    """Keep only the first Content-Type and Content-Transfer-Encoding field of a part.

    The parser (and so the scanner and this defang) reads the first; a client that reads the
    last could decode the part as something else, and find live links we never saw.
    """
    counts: dict[str, int] = {}
    for name, _ in part.raw_items():
        key = name.lower()
        if key in _STRUCTURE_FIELDS:
            counts[key] = counts.get(key, 0) + 1
    for key, count in counts.items():
        if count > 1 and key not in {n.lower() for n in plan.edits.get(id(part), {})}:
            plan.edit(part, _STRUCTURE_FIELDS[key], _first_raw(part, key))


def _first_raw(part: Message, name: str) -> str:
    """The first ``name`` field's value as stored (8-bit bytes as surrogate escapes)."""
    key = name.lower()
    return next((str(v) for k, v in part.raw_items() if k.lower() == key), "")


def _content_type_with_charset(part: Message, charset: str) -> str:
    """Our Content-Type for a rewritten text part: its type, the new charset first, then the
    other parameters that every reader parses alike (a quote left open could hide a second
    charset from the stdlib parser)."""
    raw = _first_raw(part, "Content-Type")
    params = split_params(raw)[1:] if raw else []
    kept = [p.strip() for p in params if _CLEAN_PARAM.fullmatch(p) and _param_name(p) != "charset"]
    return "; ".join([_content_type(part), f'charset="{charset}"', *kept])


def _param_name(param: str) -> str:
    """The lower-case name of a parameter, without an RFC 2231 section or charset mark."""
    return param.split("=", 1)[0].strip().lower().split("*", 1)[0]


def _encode_qp(data: bytes, plan: _Plan) -> str:
    """Quoted-printable in which no line can read as a MIME delimiter.

    A text decoded from QP or base64 may hold a line "--boundary" of an enclosing multipart;
    written back as plain QP it would end the part there, and whatever the sender put after
    it (a base64 HTML part with live links, say) would become a part of its own.  The first
    "-" of a line starting with "--" and a boundary in use (every enclosing one is) is
    therefore encoded as "=2D".
    """
    encoded = quopri.encodestring(data)
    if b"\n--" not in b"\n" + encoded:
        return encoded.decode("ascii")
    delimiters = tuple(b"--" + b for b in plan.boundaries.values())
    lines = encoded.split(b"\n")
    return b"\n".join(b"=2D" + line[1:] if line.startswith(delimiters) else line
                      for line in lines).decode("ascii")


def _rewrite_part(part: Message, plan: _Plan) -> None:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = _charset(part)
    text = decode_bytes(raw, charset)
    new = defang_html(text) if _content_type(part) == "text/html" else defang_text(text)
    new = new.replace("\r\n", "\n")
    try:
        data = new.encode(charset or "ascii")
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the charset name
        data = new.encode("utf-8", "replace")
        plan.edit(part, "Content-Type", _content_type_with_charset(part, "utf-8"))
    _set_payload(part, plan, data)


def _set_payload(part: Message, plan: _Plan, data: bytes) -> None:
    """Put ``data`` in ``part``: base64 if it was base64, quoted-printable otherwise (7-bit
    safe whatever the rewritten text holds)."""
    was_base64 = _first_raw(part, "Content-Transfer-Encoding").strip().lower() == "base64"
    if was_base64:
        plan.edit(part, "Content-Transfer-Encoding", "base64")
        part.set_payload(base64.encodebytes(data).decode("ascii"))
    else:
        plan.edit(part, "Content-Transfer-Encoding", "quoted-printable")
        part.set_payload(_encode_qp(data, plan))


def _make_text_attachment(part: Message, plan: _Plan, raw: bytes, names: list[str]) -> None:
    """Replace a markup attachment by a text/plain attachment "<name>.txt" of its defanged
    markup: no client renders text/plain as a page, a reader can still see what it held, and
    the markup stays inert even if someone saves it as .html again."""
    text = sniff.as_text(raw, _charset(part))
    new = defang_text(text) if sniff.is_link_file(names) else defang_html(text)
    data = new.replace("\r\n", "\n").encode("utf-8", "replace")
    name = text_name(names[0] if names else "")
    plan.edit(part, "Content-Type", f'text/plain; charset="utf-8"; {name_param("name", name)}')
    plan.edit(part, "Content-Disposition", f"attachment; {name_param('filename', name)}")
    _set_payload(part, plan, data)


def _file_names(part: Message) -> list[str]:
    """The file names a client may use: Content-Disposition filename, then Content-Type name,
    RFC 2231 and RFC 2047 encodings decoded (clients decode both)."""
    names = []
    for value in (_param(part, "filename", "content-disposition"), _param(part, "name")):
        if value:
            names.append(decode_words(decodable_tail(value)))
    return names


def _param(part: Message, name: str, header: str = "content-type") -> str:
    try:
        value = part.get_param(name, header=header)
        return collapse_rfc2231_value(value) if value else ""
    except (LookupError, UnicodeError, ValueError, TypeError):
        return ""


def _rebuild_multipart(part: Message, plan: _Plan) -> list[Message]:
    """A multipart the parser could not split: rebuild it from the parts found in its body,
    or make it one defanged text/plain part.  Returns the new sub-parts to defang."""
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    plan.recovered_bytes += len(raw)
    found = None
    if plan.recovered_bytes <= _MAX_RECOVERED_SHARE * len(plan.message):
        found = recover_multipart(raw, MAX_MIME_PARTS)
    if found is None or found.truncated:
        plan.edit(part, "Content-Type", 'text/plain; charset="utf-8"')
        plan.edit(part, "Content-Transfer-Encoding", "quoted-printable")
        text = defang_text(decode_bytes(raw, _charset(part))).replace("\r\n", "\n")
        part.set_payload(_encode_qp(text.encode("utf-8", "replace"), plan))
        return []
    children: list[Message | str] = [parse_message(c) for c in found.parts]
    part.set_payload(children)
    part.preamble = None if found.preamble is None else _text(found.preamble)
    part.epilogue = None if found.epilogue is None else _text(found.epilogue)
    plan.edit(part, "Content-Transfer-Encoding", None)  # a multipart is 7bit/8bit
    plan.boundaries[id(part)] = plan.new_boundary(part)
    return [c for c in children if isinstance(c, Message)]


def _text(data: bytes) -> str:
    return data.decode("ascii", "surrogateescape")


def _bytes(text: str) -> bytes:
    """Stored text back to bytes with CRLF line ends (8-bit bytes restored)."""
    text = _NL.sub("\r\n", text)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _header_block(part: Message, edits: dict[str, str | None]) -> bytes:
    pending = {name.lower(): (name, value) for name, value in edits.items()}
    edited = set(pending)
    out: list[bytes] = []
    for name, value in part.raw_items():
        key = name.lower()
        if key in edited:
            if key not in pending or key == "content-transfer-encoding":
                continue  # a second field we replaced, or one that moves to the end
            new = pending.pop(key)[1]
            if new is None:
                continue
            value = new
        out.append(_bytes(f"{name}: {value}") + _CRLF)
    for name, new in pending.values():
        if new is not None:
            out.append(_bytes(f"{name}: {new}") + _CRLF)
    out.append(_CRLF)
    return b"".join(out)


def _serialise(msg: Message, plan: _Plan) -> bytes:
    """The tree as bytes, like ``BytesGenerator`` with CRLF but iterative, deterministic and
    without re-folding headers (see :func:`defang_message`)."""
    out: list[bytes] = []
    todo: list[Message | bytes] = [msg]
    while todo:
        item = todo.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        out.append(_header_block(item, plan.edits.get(id(item), {})))
        payload = _stored_payload(item)
        if isinstance(payload, list):
            children = [c for c in payload if isinstance(c, Message)]
            boundary = plan.boundaries.get(id(item))
            if boundary is None:  # message/rfc822 and the like: the parts one after another
                todo.extend(reversed(children))
                continue
            pieces: list[Message | bytes] = []
            if item.preamble is not None:
                pieces.append(_bytes(item.preamble) + _CRLF)
            delimiter = b"--" + boundary
            pieces.append(delimiter + _CRLF)
            for index, child in enumerate(children):
                if index:
                    pieces.append(_CRLF + delimiter + _CRLF)
                pieces.append(child)
            pieces.append(_CRLF + delimiter + b"--" + _CRLF)
            if item.epilogue is not None:
                pieces.append(_bytes(item.epilogue))
            todo.extend(reversed(pieces))
        elif isinstance(payload, str):
            out.append(_bytes(payload))
        elif isinstance(payload, bytes):
            out.append(_NL_BYTES.sub(_CRLF, payload))
    return b"".join(out)
