"""Helpers for the scanner tests: the synthetic messages and a builder for new ones."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from pathlib import Path

from popproxy.scan import Scanner, ScanSettings, Verdict

DATA = Path(__file__).resolve().parents[1] / "data" / "scan"
REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"


def load(name: str) -> bytes:
    """A message from tests/data/scan."""
    return (DATA / name).read_bytes()


def scan(message: bytes, config: ScanSettings | None = None) -> Verdict:
    """Scan with no feeds and the default (or given) config."""
    return Scanner(config, feeds=()).scan(message)


def names(verdict: Verdict) -> set[str]:
    """The signal names of a verdict."""
    return {s.name for s in verdict.signals}


def build(
    *,
    text: str | None = None,
    html: str | None = None,
    sender: str = "Alice <alice@example.org>",
    subject: str = "hello",
    attachments: tuple[tuple[str, bytes, str], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """Build a message: text and/or HTML body, attachments as (filename, data, mime type)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = sender
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject
    for name, value in headers:
        msg[name] = value
    if text is not None:
        msg.set_content(text)
    if html is not None:
        if text is None:
            msg.set_content(html, subtype="html")
        else:
            msg.add_alternative(html, subtype="html")
    if text is None and html is None:
        msg.set_content("see attachment")
    for filename, data, mime in attachments:
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()
