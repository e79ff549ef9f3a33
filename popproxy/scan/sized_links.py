"""Equal-length link defanging of decoded text, and of its quoted-printable and base64 forms.

Used when the size of a message was told to the client before it was judged (the listing
budget, docs/scanning.md): RFC 1939 section 5 wants RETR to return exactly the octets LIST
announced, so every edit here replaces bytes with as many bytes:

- schemes: ``http:`` -> ``hxxp:``, ``https:`` -> ``hxxps:``, ``ftp:`` -> ``fxp:`` (the notation
  of security notices, readable, never a link);
- hosts after ``//`` and ``www.`` hosts: every ``.`` -> ``_`` (no resolver takes it, no client
  auto-links it);
- HTML attributes that navigate, load or submit (``href``, ``src``, ``action``, ...) get their
  first letter replaced by ``x`` (``href`` -> ``xref``): an unknown attribute does nothing, even
  if its value hides a scheme in character references; ``url(`` in CSS -> ``ur_(``.

Only ASCII-compatible text is edited; the caller refuses other charsets.
"""

from __future__ import annotations

import base64
import binascii
import re

# A scheme a client follows; "tt"/"t" replaced so the word keeps its length.
_SCHEME = re.compile(rb"(?i)(?<![a-z0-9+.-])(?:https?|ftp)(?=:)")
# A host after "//" (any scheme, or protocol-relative), and a bare "www." host clients link.
_HOST = re.compile(rb"(?i)(?<=//)[^\s/?#\"'<>\\]{1,255}|(?<![a-z0-9.-])www\.[^\s/?#\"'<>\\]{1,255}")
# HTML attributes that make a request or navigate (HTML Living Standard; svg xlink:href).
_ATTRIBUTE = re.compile(
    rb"(?i)(?<=[\s\"'/:])(?:href|src|srcset|lowsrc|dynsrc|action|formaction|background|poster"
    rb"|ping|data|codebase|archive|longdesc|manifest|http-equiv)(?=\s*=)")
_CSS_URL = re.compile(rb"(?i)\burl(?=\s*\()")


def _scheme(m: re.Match[bytes]) -> bytes:
    word = m.group(0)
    if word.lower() == b"ftp":
        return word[:1] + b"x" + word[2:]
    return word[:1] + b"xx" + word[3:]


def _first_x(m: re.Match[bytes]) -> bytes:
    return b"x" + m.group(0)[1:]


def _css(m: re.Match[bytes]) -> bytes:
    return m.group(0)[:2] + b"_"


def defang_text(data: bytes, html: bool) -> bytes:
    """``data`` with its links made inert, of exactly the same length."""
    out = _SCHEME.sub(_scheme, data)
    out = _HOST.sub(lambda m: m.group(0).replace(b".", b"_"), out)
    if html:
        out = _ATTRIBUTE.sub(_first_x, out)
        out = _CSS_URL.sub(_css, out)
    if len(out) != len(data):  # every substitution above keeps lengths: a bug if not
        raise AssertionError("equal-length defang changed the length")
    return out


# ---------------------------------------------------------------- transfer encodings
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def _qp_map(raw: bytes) -> tuple[bytearray, list[tuple[int, int]]]:
    """Decoded bytes of a quoted-printable body and, per decoded byte, its (start, length) in
    ``raw``: 1 for a literal, 3 for ``=XX``.  Soft line breaks (RFC 2045 section 6.7 rule 5)
    decode to nothing; a stray ``=`` is taken literally, as lenient decoders do."""
    decoded, spans, i = bytearray(), [], 0
    while i < len(raw):
        if raw[i] == 0x3D:  # "="
            if raw[i + 1 : i + 3] == b"\r\n":
                i += 3
                continue
            if raw[i + 1 : i + 2] == b"\n":
                i += 2
                continue
            pair = raw[i + 1 : i + 3]
            if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
                decoded.append(int(pair, 16))
                spans.append((i, 3))
                i += 3
                continue
        decoded.append(raw[i])
        spans.append((i, 1))
        i += 1
    return decoded, spans


def defang_qp(raw: bytes, html: bool) -> bytes:
    """A quoted-printable body defanged in its encoded form, same length: each changed byte is
    written where it was, as a literal or as ``=XX`` like the original byte."""
    decoded, spans = _qp_map(raw)
    new = defang_text(bytes(decoded), html)
    out = bytearray(raw)
    for index, (old_byte, new_byte) in enumerate(zip(decoded, new, strict=True)):
        if old_byte == new_byte:
            continue
        start, length = spans[index]
        out[start : start + length] = (bytes([new_byte]) if length == 1
                                       else b"=%02X" % new_byte)
    return bytes(out)


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def defang_base64(raw: bytes, html: bool) -> bytes | None:
    """A base64 body decoded, defanged and re-encoded into the same layout (its line breaks
    where they were), same length; None when it is not canonical base64 (re-encoding it would
    not give the same characters back, so its length could change)."""
    positions = [i for i, byte in enumerate(raw) if byte in _B64_ALPHABET]
    chars = bytes(raw[i] for i in positions)
    other = bytes(b for b in raw if b not in _B64_ALPHABET)
    if other.strip(b"\r\n\t ") or not chars:
        return None if other.strip(b"\r\n\t ") else raw
    try:
        decoded = base64.b64decode(chars, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(decoded) != chars:
        return None
    encoded = base64.b64encode(defang_text(decoded, html))
    out = bytearray(raw)
    for position, char in zip(positions, encoded, strict=True):
        out[position] = char
    return bytes(out)
