"""Actions: the bytes the client is given for a verdict.

pass and unscanned: the message unchanged (the same object).  tag: X-Popproxy-Verdict and
X-Popproxy-Reasons headers and an optional Subject prefix.  defang: tag plus inert links.
quarantine: a short notice in place of the message.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from email.charset import QP, Charset
from email.header import Header
from email.mime.text import MIMEText
from email.utils import formatdate

from popproxy.scan.defang import defang_message
from popproxy.scan.header_words import header_text
from popproxy.scan.headers import (
    edit_headers,
    field_name,
    fold_list,
    header_fields,
    split_message,
)
from popproxy.scan.limits import MAX_HEADER_REASONS
from popproxy.scan.mime_parse import parse_message
from popproxy.scan.settings import ScanSettings
from popproxy.scan.verdict import Verdict, clean_detail

# Characters of the original Subject repeated in a quarantine notice.
_MAX_NOTICE_SUBJECT = 120
# Bytes of each header field the notice decodes.  The stdlib's RFC 2047 decoder is quadratic on
# hostile values (a 140 KB Subject of "=?a?q?x" took 38 s); a real From, To or Subject, even
# folded over a dozen encoded words, is far shorter, and only 120 characters are shown anyway.
_MAX_NOTICE_FIELD = 2048
_NOTICE_FIELDS = (b"from", b"to", b"subject")

# Changes whenever apply_action renders some original differently from before.  A cache that
# stores the rendered size (the proxy's verdict cache, for STAT/LIST) must treat entries made
# under another version as stale, or LIST and RETR disagree after an upgrade.
# 2: defang writes header fields as they came (no re-folding), CRLF only, rebuilds multiparts
#    without a usable boundary; tag puts the Subject before a malformed header line.
# 3: defang serialises the HTML5 parse tree (issue 14) and turns markup attachments into text.
RENDER_VERSION = 3


def verdict_fields(verdict: Verdict, sep: bytes) -> list[bytes]:
    """The X-Popproxy-Verdict and X-Popproxy-Reasons fields for a verdict."""
    fields = [f"X-Popproxy-Verdict: {verdict.action}; score={verdict.score:g}".encode("ascii")]
    reasons = [clean_detail(r) for r in verdict.reasons[:MAX_HEADER_REASONS]]
    if reasons:
        fields.append(fold_list("X-Popproxy-Reasons", reasons, sep))
    return fields


def tag_message(message: bytes, verdict: Verdict, subject_prefix: str = "") -> bytes:
    """Add verdict headers (replacing any forged ones) and prefix the Subject."""
    _, sep, _ = split_message(message)
    prefix = subject_prefix.encode("ascii", "replace")
    return edit_headers(message, verdict_fields(verdict, sep), subject_prefix=prefix)


def quarantine_id_for(message: bytes) -> str:
    """A stable id for a held message: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(message).hexdigest()[:16]


def quarantine_notice(
    message: bytes,
    verdict: Verdict,
    *,
    quarantine_id: str,
    notice_from: str,
    now: float,
) -> bytes:
    """A short text/plain message telling the reader a message was held, and under which id.

    Only header values of the original (sender, subject, date) are repeated, never its body.
    """
    original = parse_message(_notice_header_block(message))
    sender = clean_detail(header_text(original, "From"))
    subject = " ".join(header_text(original, "Subject").split())[:_MAX_NOTICE_SUBJECT]
    reasons = "\n".join(f"  - {clean_detail(r)}" for r in verdict.reasons[:MAX_HEADER_REASONS])
    body = (
        "A message addressed to you was held by the mail security proxy.\n\n"
        f"Quarantine id: {quarantine_id}\n"
        f"From: {sender}\n"
        f"Subject: {subject}\n"
        f"Score: {verdict.score:g}\n"
        f"Reasons:\n{reasons}\n\n"
        "If you expected this message, ask your administrator to release it and quote the id.\n"
    )
    charset = Charset("utf-8")
    charset.body_encoding = QP
    notice = MIMEText(body, "plain", charset)  # type: ignore[arg-type]  # typeshed: str only
    notice["From"] = notice_from
    to = clean_detail(header_text(original, "To"))
    if to:
        notice["To"] = to
    title = f"[quarantined] {subject}"
    notice["Subject"] = title if title.isascii() else Header(title, "utf-8").encode()
    notice["Date"] = formatdate(now)
    notice["Message-ID"] = f"<quarantine-{quarantine_id}@popproxy.invalid>"
    notice["X-Popproxy-Verdict"] = f"quarantine; score={verdict.score:g}"
    notice["X-Popproxy-Quarantine-Id"] = quarantine_id
    _, sep, _ = split_message(message)
    return notice.as_bytes().replace(b"\n", sep) if sep == b"\r\n" else notice.as_bytes()


def _notice_header_block(message: bytes) -> bytes:
    """The From, To and Subject fields of ``message``, each cut to _MAX_NOTICE_FIELD bytes."""
    head, sep, _ = split_message(message)
    kept = [f[:_MAX_NOTICE_FIELD].rstrip(b"\r\n") + sep for f in header_fields(head)
            if field_name(f) in _NOTICE_FIELDS]
    return b"".join(kept) + sep


def apply_action(
    message: bytes,
    verdict: Verdict,
    config: ScanSettings | None = None,
    *,
    quarantine_id: str | None = None,
    clock: Callable[[], float] = time.time,
) -> bytes:
    """The bytes the client should see for this verdict.

    Args:
        message: the original message.
        verdict: from :meth:`Scanner.scan`.
        config: for the Subject prefix and notice sender; defaults when None.
        quarantine_id: id quoted in the quarantine notice; a hash of the message when None.
        clock: wall-clock seconds for the notice's Date header.

    Returns:
        ``message`` itself for pass and unscanned (the proxy's policy decides about unscanned
        mail), otherwise new bytes.
    """
    cfg = config if config is not None else ScanSettings()
    if verdict.action in ("pass", "unscanned"):
        return message
    if verdict.action == "tag":
        return tag_message(message, verdict, cfg.subject_prefix)
    if verdict.action == "defang":
        return tag_message(defang_message(message, cfg.risky_attachments), verdict,
                           cfg.subject_prefix)
    return quarantine_notice(
        message,
        verdict,
        quarantine_id=quarantine_id or quarantine_id_for(message),
        notice_from=cfg.notice_from,
        now=clock(),
    )
