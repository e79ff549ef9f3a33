"""Shared fixtures: one background event loop for the in-process proxy and demo upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import LoopThread


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    """An asyncio loop in a daemon thread, shared by every test that runs a proxy."""
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()
