"""popproxy's loop: uvloop through a loop factory, never by an event loop policy."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from popproxy.proxy.event_loop import loop_factory, run_on


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_runs_the_coroutine_without_setting_a_loop_policy() -> None:
    pytest.importorskip("uvloop")
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # uvloop.install() warns on Python 3.12+
        module = run_on(loop_factory("uvloop"), _loop_module())
    assert module.startswith("uvloop")
    assert asyncio.get_event_loop_policy() is policy  # nothing process-wide changed


def test_asyncio_is_the_standard_loop() -> None:
    assert loop_factory("asyncio") is None
    assert run_on(None, _loop_module()).startswith("asyncio")
