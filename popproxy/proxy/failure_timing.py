"""How long each upstream takes to refuse a password, so that every refusal takes as long.

A login refused by the policy (a ``users:`` rule) never reaches the upstream; one refused by
the upstream takes the upstream's own failure delay (Dovecot: 1.5-2 s with its default
``auth_failure_delay = 2 secs``, flushed by a 0.5 s timer).  If the proxy answered the first
after ``limits.auth_failure_delay`` and the second whenever the upstream did, a guesser could
tell them apart by the clock: which accounts a rule protects, which exist upstream.  So every
refusal is held until the longest refusal time seen lately from the upstream the user is
routed to (or the configured floor, if longer).  One object per server, shared by sessions.
"""

from __future__ import annotations

from collections import deque

from popproxy.policy import Upstream

# Refusal times remembered per upstream: the floor follows an upstream whose delay got shorter
# after this many refusals, and a longer one at once.
SAMPLES = 32
# Added above the longest refusal seen: the same upstream's next refusal is seldom slower by
# more than scheduling noise, and one that is sets a new maximum.
MARGIN = 0.03
# Longer refusals are learned as this long: an upstream that slow to say no is stalled or
# penalising the proxy's address (Dovecot's auth penalty), not deliberately delaying, and
# learning it would make every refusal through the proxy take that long.
MAX_LEARNED = 10.0

UpstreamKey = tuple[str, int, str]


def upstream_key(upstream: Upstream) -> UpstreamKey:
    """The address a refusal time belongs to (names can be re-pointed by a policy reload)."""
    return upstream.host, upstream.port, upstream.mode


class FailureTiming:
    """Recent refusal times per upstream address, and the floor they imply."""

    def __init__(self) -> None:
        self._samples: dict[UpstreamKey, deque[float]] = {}

    def observe(self, key: UpstreamKey, seconds: float) -> None:
        """One password refusal by the upstream took ``seconds`` (from after the lockout
        check to its ``-ERR``: connect, greeting and USER/PASS)."""
        samples = self._samples.setdefault(key, deque(maxlen=SAMPLES))
        samples.append(min(seconds, MAX_LEARNED))

    def learned(self, key: UpstreamKey) -> float:
        """The longest recent refusal plus MARGIN; 0 before the upstream has refused one."""
        samples = self._samples.get(key)
        return max(samples) + MARGIN if samples else 0.0

    def floor(self, key: UpstreamKey, configured: float) -> float:
        """How long after the lockout check any refusal for this upstream is answered."""
        return max(configured, self.learned(key))
