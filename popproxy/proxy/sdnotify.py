"""systemd service notifications (sd_notify(3)) without libsystemd.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and waits for ``READY=1`` before it considers the service started; ``RELOADING=1`` with
``MONOTONIC_USEC=`` ... ``READY=1`` brackets a reload (systemd 253 and later track it; older
versions ignore what they do not know), ``STOPPING=1`` announces the drain and ``STATUS=`` is
the line ``systemctl status`` shows.  Without ``$NOTIFY_SOCKET`` (a terminal, the tests, another
supervisor) every call does nothing.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("popproxy.sdnotify")

SEND_TIMEOUT = 1.0  # seconds; systemd reads at once: this only bounds a stuck receiver
STATUS_INTERVAL = 15.0  # seconds between STATUS= updates while serving
# systemctl status shows one line; a refusal listing every bad file is cut here.
STATUS_MAX = 400


def _address(path: str | None) -> str | None:
    """The socket address for ``path``: ``@name`` is Linux's abstract namespace (NUL first)."""
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # "vsock:CID:PORT" (a VM's systemd talking to its host) is not supported


class Notifier:
    """Sends notifications to ``path`` (default ``$NOTIFY_SOCKET``); never raises."""

    def __init__(self, path: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        if path is None:
            path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        self._address = _address(path)
        if path and self._address is None:
            log.warning("NOTIFY_SOCKET=%s is not a UNIX socket path: not notifying systemd",
                        path)
        self._last_status = ""
        self._refused = False  # the last reload was refused: ERRNO= is set until a good one
        # starting -> ready <-> reloading; stopping.  A SIGHUP before READY=1 (listeners still
        # binding) must not announce readiness early, so reloading() needs "ready".
        self.state = "starting"

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``VAR=value`` lines in one datagram; False if not sent (logged, not raised)."""
        if self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", assignments[0], exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        """All listeners are bound (and the metrics server is up): systemd may start
        dependent units."""
        self.state = "ready"
        self._last_status = status
        return self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """A reload begins (SIGHUP); ``reloaded`` must follow, whatever the outcome."""
        if self.state != "ready":
            return False
        self.state = "reloading"
        # MONOTONIC_USEC: CLOCK_MONOTONIC, which systemd compares with its reload request.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def reloaded(self, status: str, refused: str = "") -> bool:
        """The reload is over (applied or refused): READY=1 again.

        A refusal (``refused``: why) is the STATUS= line ``systemctl status`` shows, with
        ERRNO=22 (EINVAL), which systemd records as the unit's error; a later good reload sends
        ERRNO=0.  Under ``Type=notify`` ``systemctl reload`` itself reports only the
        ExecReload= commands' exit (packaging/popproxy.service runs ``check-config`` first,
        the same checks); under ``Type=notify-reload`` (systemd 253+) it waits for READY=1.
        """
        if self.state != "reloading":
            return False
        if not refused and not self._refused:
            return self.ready(status)
        self.state, self._refused = "ready", bool(refused)
        self._last_status = f"reload refused: {refused}"[:STATUS_MAX] if refused else status
        code = errno.EINVAL if refused else 0
        return self.notify("READY=1", f"STATUS={self._last_status}", f"ERRNO={code}")

    def stopping(self, status: str) -> bool:
        """SIGTERM: listeners close and sessions drain."""
        self.state = "stopping"
        self._last_status = status
        return self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """Only while ready and only if it changed: ``systemctl status`` shows the last one."""
        if self.state != "ready" or status == self._last_status:
            return False
        self._last_status = status
        return self.notify(f"STATUS={status}")


async def report_status(notifier: Notifier, status: Callable[[], str],
                        interval: float = STATUS_INTERVAL) -> None:
    """Keep STATUS= current (e.g. the session count) until cancelled."""
    if not notifier.enabled:
        return
    while True:
        await asyncio.sleep(interval)
        notifier.status(status())
