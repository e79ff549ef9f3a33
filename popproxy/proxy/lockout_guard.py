"""Applies the lockout policy around a login: check first, then record the outcome.

Delays are ``await``ed sleeps, so only the guessing session waits.  The decision depends only
on hashed counters, never on whether the account exists upstream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from popproxy.policy.decisions import IPAddress
from popproxy.policy.lockout import Assessment, LockoutKeys, assess, make_keys, password_tag
from popproxy.policy.schema_lockout import SECRET_FILE, Lockout
from popproxy.proxy.lockout_store import FailoverStore, LockoutStore, MemoryStore, RedisStore
from popproxy.proxy.observe import Observer
from popproxy.proxy.redis_client import connect
from popproxy.proxy.store_sqlite import SqliteStore
from popproxy.statefiles import private_dir

log = logging.getLogger("popproxy.lockout")

SECRET_BYTES = 32

Sleep = Callable[[float], Awaitable[None]]


class LockoutSecretError(OSError):
    """The lockout key cannot be read or created: one line naming the file and what to do
    (an OSError, so ``popproxy run`` reports it like a port that cannot be bound)."""


def load_secret(settings: Lockout, state_dir: Path) -> bytes:
    """The HMAC key: ``secret_file`` if set (share it between instances), else one made once."""
    path = settings.secret_file or state_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LockoutSecretError(
            f"cannot read the lockout key {path}: {exc.strerror or exc} "
            "(it must be readable by the service user)") from None
    secret = secrets.token_hex(SECRET_BYTES).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        if settings.secret_file is None:
            private_dir(state_dir)  # 0700: it holds this key, verdicts, quarantined mail
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(secret)
        try:
            # Published whole (a hard link cannot half-exist): workers of one host start
            # together, and one that read a key still being written would count under another.
            os.link(tmp, path)
        except FileExistsError:  # another instance made it just now
            return path.read_bytes().strip()
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        hint = ("create it before starting popproxy (see docs/quickstart.md), or remove "
                "lockout.secret_file to keep the key in state_dir"
                if settings.secret_file is not None else "make state_dir writable")
        raise LockoutSecretError(
            f"cannot create the lockout key {path}: {exc.strerror or exc}; "
            f"{hint}") from None
    return secret


class LockoutGuard:
    """One per process; shared by all sessions."""

    def __init__(self, settings: Lockout, store: LockoutStore, secret: bytes, observer: Observer,
                 clock: Callable[[], float] = time.time, sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self._store = store
        self._secret = secret
        self._observer = observer
        self._clock = clock
        self._sleep = sleep
        self._blocked: dict[tuple[str, str], float] = {}  # (scope, key) -> until, for the gauge
        self._last: tuple[str, IPAddress, LockoutKeys] | None = None  # keys of the last check

    @classmethod
    def from_policy(cls, settings: Lockout, state_dir: Path, observer: Observer,
                    host_db: Path | None = None) -> LockoutGuard:
        """Counters in Redis (``redis_url``, Sentinel or Cluster), else in the host's SQLite
        file (``host_db``: several workers on this host), else in this process."""
        secret = load_secret(settings, state_dir)
        primary: LockoutStore
        if settings.redis is not None:
            primary = RedisStore(connect(settings.redis))
        elif host_db is not None:
            primary = SqliteStore(host_db)  # its errors count and fail like Redis's
        else:
            return cls(settings, MemoryStore(), secret, observer)

        def on_error(operation: str, exc: BaseException) -> None:
            observer.metrics.redis_errors.labels(operation).inc()
            observer.audit.event("lockout_store_error", None, operation=operation,
                                 error=exc.__class__.__name__, fail_mode=settings.fail_mode)
            log.warning("lockout store %s failed (%s): failing %s", operation,
                        exc.__class__.__name__, settings.fail_mode)

        store = FailoverStore(primary, settings.fail_mode == "open", on_error)
        return cls(settings, store, secret, observer)

    def _keys(self, username: str, address: IPAddress) -> LockoutKeys:
        # check() and then failed()/succeeded() ask for the same keys: compute them once.
        last = self._last
        if last is not None and last[0] == username and last[1] == address:
            return last[2]
        keys = make_keys(self._secret, username, address, self.settings)
        self._last = (username, address, keys)
        return keys

    async def check(self, username: str, address: IPAddress) -> Assessment:
        """Before contacting the upstream; a delay is slept here, a block is returned."""
        keys = self._keys(username, address)
        now = self._clock()
        counts = await self._store.counts(keys, now, self.settings.window)
        result = assess(counts, self.settings)
        if result.action == "block" and result.scope is not None:
            key = {"pair": keys.pair, "source": keys.source, "account": keys.account}
            self._blocked[(result.scope, key[result.scope])] = now + self.settings.window
        self._update_gauge(now)
        if result.action == "delay":
            await self._sleep(result.delay)
        return result

    async def failed(self, username: str, address: IPAddress, password: bytes) -> None:
        tag = password_tag(self._secret, username, password)
        await self._store.record_failure(self._keys(username, address), tag, self._clock(),
                                         self.settings.window)

    async def succeeded(self, username: str, address: IPAddress) -> None:
        await self._store.record_success(self._keys(username, address), self._clock(),
                                         self.settings.trusted_ttl)

    async def close(self) -> None:
        """Release the store's connections (Redis) at shutdown."""
        close = getattr(self._store, "close", None)
        if close is not None:
            await close()

    def refresh_gauge(self) -> None:
        """popproxy_lockouts_active without a login: the server calls it periodically so the
        gauge falls when blocks expire."""
        self._update_gauge(self._clock())

    def _update_gauge(self, now: float) -> None:
        for item in [k for k, until in self._blocked.items() if until <= now]:
            del self._blocked[item]
        for scope in ("pair", "source", "account"):
            active = sum(1 for s, _ in self._blocked if s == scope)
            self._observer.metrics.lockouts_active.labels(scope).set(active)
