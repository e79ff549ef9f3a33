"""The ``dovecot`` fixture: a real Dovecot POP3 server for the whole test session.

``dovecot_tls`` (and ``dovecot_tls12``, capped at TLS 1.2) are separate instances with TLS on,
started only when a test asks for them; ``dovecot`` itself stays ``ssl = no``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import trustme

from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration import dovecot as dovecot_mod
from tests.integration import redis_server
from tests.integration.dovecot import Dovecot, DovecotUnavailable, TlsSetup
from tests.integration.redis_server import RedisServer, RedisUnavailable


def _unavailable(reason: str) -> NoReturn:
    """No Dovecot: an error in CI (CI=true), a skip on a developer machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Dovecot integration tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"Dovecot integration tests skipped: {reason}")


def _running_dovecot(tls: TlsSetup | None = None) -> Iterator[Dovecot]:
    try:
        server = dovecot_mod.start(tls=tls)
    except DovecotUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        dovecot_mod.cleanup(server)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    yield from _running_dovecot()


@dataclass(frozen=True)
class DovecotPki:
    """A trustme CA and a server certificate (for ``server_name`` only) for the TLS Dovecots."""

    ca_file: Path
    cert: Path
    key: Path
    server_name: str


@pytest.fixture(scope="session")
def dovecot_pki(tmp_path_factory: pytest.TempPathFactory) -> DovecotPki:
    ca = trustme.CA()
    base = tmp_path_factory.mktemp("dovecot-pki")
    name = "pop3.dovecot.test"  # deliberately not the address the proxy connects to
    server = ca.issue_cert(name)
    pki = DovecotPki(base / "ca.pem", base / "cert.pem", base / "key.pem", name)
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.cert.write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(pki.key))
    return pki


@pytest.fixture(scope="session")
def dovecot_tls(dovecot_pki: DovecotPki) -> Iterator[Dovecot]:
    """Dovecot with ``ssl = required``: STLS on ``port``, implicit TLS on ``tls_port``."""
    yield from _running_dovecot(TlsSetup(dovecot_pki.cert, dovecot_pki.key))


@pytest.fixture(scope="session")
def dovecot_tls12(dovecot_pki: DovecotPki) -> Iterator[Dovecot]:
    """Like ``dovecot_tls`` but speaking at most TLS 1.2."""
    yield from _running_dovecot(TlsSetup(dovecot_pki.cert, dovecot_pki.key, "TLSv1.2"))


@pytest.fixture
def dovecot_proxy(dovecot: Dovecot, loop_thread: LoopThread) -> Iterator[RunningProxy]:
    """The proxy in front of the test Dovecot (a fresh proxy per test)."""
    with running_proxy(make_config(dovecot.port), loop_thread) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """One real redis-server for the Redis tests of the session (lockouts, verdict cache)."""
    try:
        server = redis_server.start()
    except RedisUnavailable as exc:
        if redis_server.in_ci():
            pytest.fail(f"Redis tests cannot run: {exc}", pytrace=False)
        pytest.skip(f"Redis tests skipped: {exc}")
    try:
        yield server
    finally:
        redis_server.cleanup(server)


@pytest.fixture
def rds(redis_srv: RedisServer) -> RedisServer:
    """The session's Redis, running (a test may have killed it) and empty."""
    redis_srv.start()
    redis_srv.flush()
    return redis_srv
