"""Fixtures shared by the POP3 core tests."""

from __future__ import annotations

from typing import cast

import pytest

from tests.pop3.feeding import FEED_IDS, FEEDS, Feed


@pytest.fixture(params=FEEDS, ids=FEED_IDS)
def feed(request: pytest.FixtureRequest) -> Feed:
    """Every protocol input is fed whole, one byte at a time and in random splits."""
    return cast(Feed, request.param)
