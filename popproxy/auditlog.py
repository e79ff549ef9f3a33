"""The audit log: one JSON line per security decision, for admins and fail2ban/CrowdSec.

Usernames may appear (this is the admins' record); passwords, AUTH payloads and message
bodies never do: fields with secret-looking names are replaced before writing, and callers
pass only what a decision needs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

# Field names whose values are never written (defence in depth: callers should not pass them).
SECRET_FIELDS = frozenset({"password", "pass", "passwd", "secret", "auth", "payload",
                           "sasl", "credentials", "body"})
REDACTED = "[redacted]"


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` with secret-named keys masked and bytes made printable."""
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if key.lower() in SECRET_FIELDS:
            clean[key] = REDACTED
        elif isinstance(value, bytes):
            clean[key] = value.decode("utf-8", "backslashreplace")
        else:
            clean[key] = value
    return clean


class AuditLog:
    """Writes events to ``sink`` (a text stream) or nowhere; ``clock`` is injectable."""

    def __init__(self, sink: TextIO | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._sink = sink
        self._clock = clock
        self._lock = threading.Lock()

    def event(self, kind: str, session: str | None = None, **fields: Any) -> None:
        """Record one decision: ``kind`` like "login", "connect", "lockout", "stls_injection"."""
        if self._sink is None:
            return
        record = {"event": kind, "session": session, **redact(fields)}
        # "ts" first and always with three decimals: log shippers and fail2ban's datepattern
        # can rely on one shape.
        line = f'{{"ts": {self._clock():.3f}, ' + json.dumps(record, default=str)[1:]
        with self._lock:
            self._sink.write(line + "\n")
            self._sink.flush()


def open_audit_log(path: str | None) -> AuditLog:
    """``None``: no audit log; ``-``: standard error; else append to the file."""
    import sys

    if path is None:
        return AuditLog(None)
    if path == "-":
        return AuditLog(sys.stderr)
    return AuditLog(open(path, "a", encoding="utf-8"))
