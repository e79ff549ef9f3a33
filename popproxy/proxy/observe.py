"""What a session reports to: metrics, the audit log and a session-id source (all injected)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from popproxy.auditlog import AuditLog
from popproxy.metrics import Metrics


def random_session_id() -> str:
    # secrets.token_hex(6) is this (os.urandom through SystemRandom) in four Python calls more,
    # at every connection.
    return os.urandom(6).hex()


@dataclass(frozen=True)
class Observer:
    metrics: Metrics = field(default_factory=Metrics)
    audit: AuditLog = field(default_factory=AuditLog)
    new_session_id: Callable[[], str] = random_session_id
