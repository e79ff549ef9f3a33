"""Redaction of the client->proxy stream for captures: no password or SASL payload survives.

Line-based and incremental (sans-io): bytes go in as they were read, possibly one command split
over several reads or several pipelined commands in one read; complete lines come out redacted,
an incomplete last line is held back until its line end (or the end of the session).

Replaced by ``PLACEHOLDER``:

* the argument of ``PASS`` (RFC 1939 section 7: the whole rest of the line, spaces included);
* the digest of ``APOP name digest`` (RFC 1939 section 7; the name is kept);
* everything after the mechanism in ``AUTH mechanism initial-response`` (RFC 5034 section 4);
* every line the client sends during an AUTH exchange (RFC 5034 section 4: base64 responses
  or ``*``), until the proxy has answered the exchange with ``+OK`` or ``-ERR``;
* any line too long for the proxy to accept at all (it could hold anything).

Whether the next line belongs to an AUTH exchange is decided by the caller at each read: the
session passes its parser's SASL mode, which is exact because it reads only once every complete
line received so far has been handled (and so the proxy's +OK or -ERR to an exchange has been
written).  Lines that follow an ``AUTH`` line or a SASL line *in the same read* cannot have been
answered yet; they are redacted too, as the exchange may still be going on (a pipelined command
right after AUTH shows up as ``***``: over-redaction, never a leak).

Verbs are matched case-insensitively (RFC 1939 section 3) and generously: leading blanks are
ignored, ``PASS``/``APOP``/``AUTH`` need not be followed by a space and a bare CR counts as a
line end, so even a malformed line the proxy refuses cannot carry a password into a capture.
"""

from __future__ import annotations

import re

from popproxy.pop3 import limits

PLACEHOLDER = b"***"

# Lines longer than this (line end included) are redacted whole, which also bounds the buffer.
# It is below the parser's SASL limit (RFC 5034 section 4; the limit counts the CRLF): a SASL
# line the parser refuses as too long ends the AUTH exchange while the rest of that line is
# still to come, so it must already be redacted whole here, never read as a command later.
MAX_LINE = limits.MAX_SASL_LINE - 2

_SECRET_VERBS = (b"PASS", b"APOP", b"AUTH")
# RFC 4422 section 3.1: a SASL mechanism name is 1 to 20 of A-Z, 0-9, "-" and "_".  Anything
# else after AUTH is not shown: it could be a credential typed in the wrong place.
_MECHANISM = re.compile(rb"[A-Za-z0-9_-]{1,20}")


class ClientRedactor:
    """Feed the client's bytes with ``feed``; call ``finish`` when the session ends."""

    def __init__(self) -> None:
        self._partial = bytearray()  # an incomplete line, held back
        self._overlong = False  # inside a line over MAX_LINE: already replaced, drop the rest
        self._sasl = False  # the line being completed belongs to an AUTH exchange
        # What _sasl was when the held line began: a line an AUTH line's read left incomplete
        # stays a SASL line even if the proxy has refused that AUTH by the time it completes.
        self._partial_sasl = False

    def feed(self, data: bytes, sasl: bool) -> bytes:
        """Redacted complete lines of ``partial + data``; ``sasl``: whether the proxy is
        waiting for a SASL response (the session's parser mode when ``data`` was read)."""
        self._sasl = sasl or (bool(self._partial) and self._partial_sasl)
        out = bytearray()
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._line_end(data[start : end + 1], out)
            start = end + 1
        self._hold(data[start:], out)
        return bytes(out)

    def finish(self) -> bytes:
        """The held incomplete line, redacted (the client disconnected in the middle of it)."""
        if self._overlong or not self._partial:
            return b""
        line, self._partial = bytes(self._partial), bytearray()
        return self._redact(line)

    def _line_end(self, chunk: bytes, out: bytearray) -> None:
        """``chunk`` ends with LF and completes the held line."""
        if self._overlong:
            self._overlong = False
            out += b"\r\n"
            return
        if len(self._partial) + len(chunk) > MAX_LINE:
            self._partial.clear()
            out += PLACEHOLDER + b"\r\n"
            return
        line = bytes(self._partial) + chunk
        self._partial.clear()
        out += self._redact(line)

    def _hold(self, rest: bytes, out: bytearray) -> None:
        if self._overlong or not rest:
            return
        self._partial_sasl = self._sasl or (bool(self._partial) and self._partial_sasl)
        self._partial += rest
        if len(self._partial) > MAX_LINE:  # the line end cannot fit any more
            self._partial.clear()
            self._overlong = True
            out += PLACEHOLDER

    def _redact(self, line: bytes) -> bytes:
        """One line (with its line end, if any) as it may be recorded."""
        content = line.rstrip(b"\r\n")
        ending = line[len(content) :]
        if self._sasl:
            # Stays on for the rest of this read (see the module docstring).
            return (PLACEHOLDER if content else b"") + ending
        # A stray CR is not a line end for the proxy (it refuses the line), but a client that
        # ends lines with CR alone would show a command after it: each part is redacted.
        parts = [redact_command(part) for part in content.split(b"\r")]
        self._sasl = any(starts_sasl for _, starts_sasl in parts)
        return b"\r".join(text for text, _ in parts) + ending


def redact_command(line: bytes) -> tuple[bytes, bool]:
    """A command line (no line end) with its secret removed, and whether it starts an AUTH
    exchange (``AUTH mechanism ...``: the client's next lines are SASL responses)."""
    stripped = line.lstrip(b" \t")
    verb, rest = stripped[:4], stripped[4:]
    keyword = verb.upper()
    if keyword not in _SECRET_VERBS or not rest:
        return line, False
    words = rest.split()
    if keyword == b"PASS" or not words:
        return verb + b" " + PLACEHOLDER, False
    if keyword == b"APOP":
        if len(words) < 2:  # a lone word could be the digest
            return verb + b" " + PLACEHOLDER, False
        return verb + b" " + words[0] + b" " + PLACEHOLDER, False
    mechanism = words[0]
    if not rest.startswith((b" ", b"\t")) or not _MECHANISM.fullmatch(mechanism):
        return verb + b" " + PLACEHOLDER, True
    if len(words) == 1:
        return verb + b" " + mechanism, True
    return verb + b" " + mechanism + b" " + PLACEHOLDER, True
