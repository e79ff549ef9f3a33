"""The defang action: every link in the text parts made inert but still readable.

text/plain: ``https://evil.example/x`` becomes ``hxxps://evil[.]example/x`` (the convention of
security notices: people can read it, no client turns it back into a link).  text/html: href,
action and frame src attributes are removed and the defanged URL is shown as text after the
link, so the reader still sees where it pointed.
"""

from __future__ import annotations

import base64
import email.generator
import email.policy
import html
import io
import quopri
import re
from email.message import Message

from popproxy.scan.mime import parse_message
from popproxy.scan.textdecode import decode_bytes

_URL = re.compile(r"(?i)\b(https?|ftp|wss?)://([^\s/?#<>\"'\\]*)")
_WWW = re.compile(r"(?i)(?<![\w./\[])(www\d{0,3})\.([a-z0-9-]+(?:\.[a-z0-9-]+)+)")
_SCHEME_FANG = {"http": "hxxp", "https": "hxxps", "ftp": "fxp", "ws": "wxs", "wss": "wxss"}
# A tag, with quoted attribute values allowed to contain ">" (href="...?a>b").
_TAG = re.compile(r"""<(/?)([a-zA-Z][a-zA-Z0-9]*)\b(?:[^>"']|"[^"]*"|'[^']*')*>""")
# "http://http://x" defangs in two passes (the first match swallows the second scheme).
_MAX_PASSES = 4
# Attributes that make an element navigate or load a page when clicked or rendered.
_LINK_ATTR = re.compile(
    r"""(?is)\s(href|action|formaction|xlink:href|src|data|ping)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)"""
)
_SRC_TAGS = frozenset({"iframe", "frame", "embed", "object", "script"})
_DEFANGED_BODY_TYPES = ("text/plain", "text/html")


def defang_text(text: str) -> str:
    """Make URLs in running text unclickable: scheme to hxxp, dots in the host bracketed."""

    def url(m: re.Match[str]) -> str:
        scheme = _SCHEME_FANG.get(m.group(1).lower(), m.group(1))
        return f"{scheme}://{m.group(2).replace('.', '[.]')}"

    def www(m: re.Match[str]) -> str:
        return f"{m.group(1)}[.]{m.group(2).replace('.', '[.]')}"

    for _ in range(_MAX_PASSES):
        new = _URL.sub(url, text)
        if new == text:
            break
        text = new
    return _WWW.sub(www, text)


def defang_html(markup: str) -> str:
    """Remove link targets from tags and show each anchor's URL, defanged, after it."""
    out: list[str] = []
    pending: list[str] = []
    pos = 0
    for m in _TAG.finditer(markup):
        out.append(defang_text(markup[pos : m.start()]))
        pos = m.end()
        closing, name = m.group(1) == "/", m.group(2).lower()
        if closing:
            out.append(m.group(0))
            if name == "a" and pending:
                shown = pending.pop()
                out.append(f" <span>[{html.escape(shown)}]</span>" if shown else "")
            continue
        tag, target = _strip_targets(m.group(0), name)
        out.append(defang_text(tag))
        if name == "a":
            pending.append(defang_text(target))
    out.append(defang_text(markup[pos:]))
    return "".join(out)


def _strip_targets(tag: str, name: str) -> tuple[str, str]:
    target = ""

    def drop(m: re.Match[str]) -> str:
        nonlocal target
        attr = m.group(1).lower()
        if attr in ("src", "data") and name not in _SRC_TAGS:
            return m.group(0)
        if attr == "href":
            target = html.unescape(m.group(2).strip("\"'"))
        return ""

    return _LINK_ATTR.sub(drop, tag), target


def defang_message(message: bytes) -> bytes:
    """Defang every text/plain and text/html part and re-serialise the message.

    Parts that are not text are left byte-for-byte (as the parser keeps them); each rewritten
    part keeps its charset when the new text fits it, else becomes UTF-8.
    """
    msg = parse_message(message)
    for part in msg.walk():
        if part.is_multipart() or part.get_content_type() not in _DEFANGED_BODY_TYPES:
            continue
        _rewrite_part(part)
    linesep = "\r\n" if b"\r\n" in message[:4096] else "\n"
    buf = io.BytesIO()
    gen = email.generator.BytesGenerator(
        buf, mangle_from_=False, policy=email.policy.compat32.clone(linesep=linesep)
    )
    gen.flatten(msg)
    return buf.getvalue()


def _rewrite_part(part: Message) -> None:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset()
    text = decode_bytes(raw, charset)
    new = defang_html(text) if part.get_content_type() == "text/html" else defang_text(text)
    new = new.replace("\r\n", "\n")
    try:
        data = new.encode(charset or "ascii")
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the charset name
        data, charset = new.encode("utf-8"), "utf-8"
        part.set_param("charset", "utf-8")
    was_base64 = str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64"
    del part["Content-Transfer-Encoding"]
    if was_base64:
        part["Content-Transfer-Encoding"] = "base64"
        part.set_payload(base64.encodebytes(data).decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(quopri.encodestring(data).decode("ascii"))
