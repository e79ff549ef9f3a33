"""The audit log: one JSON line per security decision, for admins and fail2ban/CrowdSec.

Usernames may appear (this is the admins' record); passwords, AUTH payloads and message
bodies never do: fields with secret-looking names are replaced before writing, and callers
pass only what a decision needs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from popproxy.statefiles import open_private

# Field names whose values are never written (defence in depth: callers should not pass them).
SECRET_FIELDS = frozenset({"password", "pass", "passwd", "secret", "auth", "payload",
                           "sasl", "credentials", "body"})
REDACTED = "[redacted]"

log = logging.getLogger("popproxy.audit")


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
    """Writes events to ``sink`` (a text stream) or nowhere; ``clock`` is injectable.

    With ``path`` the sink is that file, opened for appending, and ``reopen`` (SIGHUP) opens
    the path again: after logrotate renamed the file, new events go to a new file there.
    """

    def __init__(self, sink: TextIO | None = None,
                 clock: Callable[[], float] = time.time, path: str | None = None) -> None:
        self._path = path
        if sink is None and path is not None:
            sink = _open(path)
        self._sink = sink
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Events are written somewhere: callers skip building one when not (a login's audit
        fields cost ~1 % of its CPU, issue 18)."""
        return self._sink is not None

    @property
    def path(self) -> str | None:
        return self._path

    def reopen(self) -> bool:
        """Open the file path again (no-op for a stream); on failure keep writing to the old
        file and return False."""
        if self._path is None:
            return True
        try:
            new = _open(self._path)
        except OSError as exc:
            log.error("audit log %s cannot be reopened, still writing to the old file: %s",
                      self._path, exc.strerror or exc)
            return False
        with self._lock:
            old, self._sink = self._sink, new
        if old is not None:
            old.close()
        return True

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


def _open(path: str) -> TextIO:
    """Append; the file is 0600 (user names, client addresses), tightened if found wider."""
    fd = open_private(Path(path), os.O_WRONLY | os.O_APPEND)
    return open(fd, "a", encoding="utf-8")


def open_audit_log(path: str | None) -> AuditLog:
    """``None``: no audit log; ``-``: standard error; else append to the file (reopened on
    SIGHUP, see ``AuditLog.reopen``)."""
    if path is None:
        return AuditLog(None)
    if path == "-":
        return AuditLog(sys.stderr)
    return AuditLog(path=path)
