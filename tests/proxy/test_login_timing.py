"""A login refused by a policy rule takes as long as one refused by the upstream.

The attack: time the ``-ERR``.  A ``users:`` rule refused at the proxy's floor (1.00 s) while
the upstream refused a wrong password after its own failure delay (Dovecot: up to 2 s), so a
guesser could tell which accounts a rule guards, i.e. that they exist.  The proxy learns each
upstream's refusal time and holds every refusal (policy or upstream) for the same span.

Here: the learner (failure_timing.py), no sockets.  The session's use of it (policy and
upstream refusals timed alike, per routed upstream) is tested on the in-memory harness's
virtual clock in test_session_timing.py.
"""

from __future__ import annotations

import pytest

from popproxy.policy import Upstream
from popproxy.proxy.failure_timing import MARGIN, MAX_LEARNED, SAMPLES, FailureTiming, upstream_key

# --------------------------------------------------------------------------- the learner
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
