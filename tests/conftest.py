"""Shared fixtures: one background event loop, the demo upstream and a proxy in front of it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream
from tests.helpers import LoopThread, RunningProxy, make_config, running_demo, running_proxy

# `popproxy run` started by a test runs as one process (workers: 1, exactly the pre-worker
# behaviour those tests were written for) unless the test passes --workers; the shipped default
# is auto (docs/scaling.md).  Subprocesses inherit it.
os.environ.setdefault("POPPROXY_WORKERS", "1")


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    """An asyncio loop in a daemon thread, shared by every test that runs a proxy."""
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def demo_upstream(loop_thread: LoopThread) -> Iterator[DemoUpstream]:
    """A fresh in-process demo POP3 server (user ``demo``/``demo``, three messages)."""
    with running_demo(loop_thread) as demo:
        yield demo


@pytest.fixture
def demo_proxy(demo_upstream: DemoUpstream, loop_thread: LoopThread) -> Iterator[RunningProxy]:
    """The proxy (plain listener, default limits) in front of ``demo_upstream``."""
    with running_proxy(make_config(demo_upstream.port), loop_thread) as proxy:
        yield proxy
