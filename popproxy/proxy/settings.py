"""What every session of a listener is given: fixed for the session's lifetime."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from popproxy.capture.store import CaptureOptions
from popproxy.policy import Limits, Listener, Policy
from popproxy.proxy.failure_timing import FailureTiming
from popproxy.proxy.lockout_guard import LockoutGuard
from popproxy.proxy.observe import Observer
from popproxy.proxy.scanning import ScanService
from popproxy.proxy.upstream import Connector
from popproxy.proxy.upstream_caps import UpstreamCapabilities
from popproxy.proxy.upstream_socket import open_channel

# Session.audit, as the session's parts get it: one audit event, client and user filled in.
AuditFn = Callable[..., None]


def unaudited(event: str, **fields: object) -> None:
    """The ``AuditFn`` a session's auth handler keeps once the session has ended.

    A bound ``Session.audit`` held by the auth handler (and the mailbox view) made every session
    a reference cycle: the session, its connections and their TLS state were freed only by the
    cyclic GC, and held until a collection reached them.  The session unlinks both at its end,
    so reference counting frees it at once: gen-0/1 collections per 1000 logins fell from ~64
    to ~24 (bench/README.md, "Interpreter work per TLS login").
    """


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Everything a session needs to know, fixed for its lifetime (a policy reload on SIGHUP
    affects only sessions that start afterwards)."""

    policy: Policy
    listener: Listener
    server_tls: ssl.SSLContext | None  # None: no client-facing TLS configured
    upstream_tls: Mapping[str, ssl.SSLContext | None]  # upstream name -> client context
    observer: Observer
    lockout: LockoutGuard | None = None
    scan: ScanService | None = None
    capture: CaptureOptions | None = None  # popproxy run --capture DIR (docs/capture.md)
    # Shared by all sessions of a server (learned CAPA); tests get a fresh one.
    upstream_caps: UpstreamCapabilities = field(default_factory=UpstreamCapabilities)
    # Shared likewise: how long each upstream takes to refuse a password (auth.py's floor).
    failure_timing: FailureTiming = field(default_factory=FailureTiming)
    # How upstream connections are made (tests: in memory, tests/support/harness.py).
    upstream_connect: Connector = open_channel
    # What auth.py measures the failure floor and upstream login times with (house rule 9:
    # tests/support/harness.py gives it the loop's clock, which it moves without waiting).
    clock: Callable[[], float] = time.monotonic

    @property
    def limits(self) -> Limits:
        return self.policy.limits

    @property
    def handshake_timeout(self) -> float:
        return self.policy.tls.handshake_timeout
