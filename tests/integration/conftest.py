"""The ``dovecot`` fixture: a real Dovecot POP3 server for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration import dovecot as dovecot_mod
from tests.integration.dovecot import Dovecot, DovecotUnavailable


def _unavailable(reason: str) -> NoReturn:
    """No Dovecot: an error in CI (CI=true), a skip on a developer machine."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Dovecot integration tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"Dovecot integration tests skipped: {reason}")


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    try:
        server = dovecot_mod.start()
    except DovecotUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        dovecot_mod.cleanup(server)


@pytest.fixture
def dovecot_proxy(dovecot: Dovecot, loop_thread: LoopThread) -> Iterator[RunningProxy]:
    """The proxy in front of the test Dovecot (a fresh proxy per test)."""
    with running_proxy(make_config(dovecot.port), loop_thread) as proxy:
        yield proxy
