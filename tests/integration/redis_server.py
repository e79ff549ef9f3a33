"""Start, kill and restart a real, throw-away ``redis-server`` for the lockout tests.

The server listens on a free loopback port, keeps nothing on disk (``--save ""``,
``--appendonly no``) and runs in its own temporary directory; the system's Redis service and
/etc/redis are never touched.  Needs the Debian package ``redis-server``.
``kill()`` then ``start()`` brings it back on the same port (empty), as after a crash.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.ports import free_port

START_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # <sys/prctl.h>

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


class RedisUnavailable(Exception):
    """redis-server cannot be started here; the message says why."""


def _die_with_parent() -> None:
    """In the child: SIGKILL redis-server if pytest itself dies (Linux prctl)."""
    if _LIBC is not None and hasattr(_LIBC, "prctl"):
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class RedisServer:
    binary: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        """A synchronous client for inspecting what the proxy stored."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                           decode_responses=False)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start (again) on ``self.port``; raises ``RedisUnavailable`` if it does not come up."""
        if self.running:
            return
        self.proc = subprocess.Popen(
            [self.binary, "--save", "", "--appendonly", "no", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.root), "--logfile", str(self.log_path),
             "--daemonize", "no", "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RedisUnavailable(f"redis-server exited with {self.proc.returncode}: "
                                           f"{self._log_tail()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisUnavailable(f"redis-server did not answer PING within "
                                           f"{START_TIMEOUT}s: {self._log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, the data is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()


def start(attempts: int = 3) -> RedisServer:
    """A fresh redis-server in a temporary directory on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server not found (Debian package redis-server)")
    last: RedisUnavailable | None = None
    for _ in range(attempts):  # another process may grab the port between probe and bind
        server = RedisServer(binary, free_port(), Path(tempfile.mkdtemp(prefix="popproxy-redis-")))
        try:
            server.start()
            return server
        except RedisUnavailable as exc:
            last = exc
            cleanup(server)
    assert last is not None
    raise last


def cleanup(server: RedisServer) -> None:
    server.kill()
    shutil.rmtree(server.root, ignore_errors=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
