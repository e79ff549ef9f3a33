"""The refusal-time learner behind the login timing floor (the end-to-end attack is in
test_session_timing.py)."""

from __future__ import annotations

import pytest

from popproxy.policy import Upstream
from popproxy.proxy.failure_timing import MARGIN, MAX_LEARNED, SAMPLES, FailureTiming, upstream_key

KEY = upstream_key(Upstream(host="192.0.2.1", port=110))


def test_learned_floor_is_the_longest_recent_refusal_plus_margin() -> None:
    timing = FailureTiming()
    assert timing.floor(KEY, 1.0) == 1.0  # nothing seen yet: the configured floor
    for seconds in (1.5, 2.0, 1.6):
        timing.observe(KEY, seconds)
    assert timing.floor(KEY, 1.0) == pytest.approx(2.0 + MARGIN)
    assert timing.floor(KEY, 3.0) == 3.0  # a configured floor above it still wins
    other = upstream_key(Upstream(host="192.0.2.1", port=995, mode="tls"))
    assert timing.floor(other, 1.0) == 1.0  # per upstream address


def test_learned_floor_follows_a_faster_upstream_and_caps_a_stalled_one() -> None:
    timing = FailureTiming()
    timing.observe(KEY, 60.0)  # a stalled upstream, or one penalising the proxy's address
    assert timing.learned(KEY) == pytest.approx(MAX_LEARNED + MARGIN)
    for _ in range(SAMPLES):
        timing.observe(KEY, 0.5)
    assert timing.learned(KEY) == pytest.approx(0.5 + MARGIN)


def test_the_key_is_the_address_not_the_name() -> None:
    # A policy reload can point a name elsewhere: times belong to host, port and TLS mode.
    assert upstream_key(Upstream(host="mail.example", port=995, mode="tls")) == (
        "mail.example", 995, "tls")
    assert upstream_key(Upstream(host="mail.example", port=110)) != upstream_key(
        Upstream(host="mail.example", port=110, mode="starttls"))
