"""Against a real Dovecot with its default failure delay: a policy refusal is not faster.

Dovecot answers a wrong password after 1.5-2 s (``auth_failure_delay = 2 secs``, flushed by a
0.5 s timer), longer than the proxy's default floor of 1 s.  See tests/proxy/test_session_timing.py
for the same with a scripted upstream (on a virtual clock there).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from popproxy.proxy.failure_timing import MARGIN
from tests.helpers import LoopThread, make_config, running_proxy
from tests.integration import dovecot as dovecot_mod
from tests.integration.conftest import _unavailable
from tests.integration.dovecot import Dovecot, DovecotUnavailable

AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
TOLERANCE = 0.05  # the bar: identical timing within 50 ms

DOVECOT_DELAY = "2 secs"  # Dovecot's default
DOVECOT_MAX = 2.1  # seconds: its longest refusal (2 s after a 0.5 s timer tick) and some


def refusal_time(port: int, user: str, password: str = "wrong") -> float:
    """Seconds from sending PASS to the -ERR (the failed-login reply is checked)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies = sock.makefile("rb")
        replies.readline()
        sock.sendall(f"USER {user}\r\n".encode())
        assert replies.readline().startswith(b"+OK")
        started = time.monotonic()
        sock.sendall(f"PASS {password}\r\n".encode())
        answer = replies.readline()
        elapsed = time.monotonic() - started
    assert answer == AUTH_FAILED
    return elapsed


@pytest.fixture(scope="module")
def slow_dovecot() -> Iterator[Dovecot]:
    """A Dovecot with its default failure delay (the shared fixture turns it off)."""
    config = dovecot_mod._config

    def default_delay(*args: object, **kwargs: object) -> str:
        text = config(*args, **kwargs)  # type: ignore[arg-type]
        assert "auth_failure_delay = 0\n" in text
        return text.replace("auth_failure_delay = 0\n", f"auth_failure_delay = {DOVECOT_DELAY}\n")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dovecot_mod, "_config", default_delay)
        try:
            server = dovecot_mod.start()
        except DovecotUnavailable as exc:
            _unavailable(str(exc))
    try:
        yield server
    finally:
        dovecot_mod.cleanup(server)


GUARDED = [{"match": "bob", "allow": ["10.0.0.0/8"]}]  # refused by the policy from 127.0.0.1


def test_policy_refusal_is_held_to_dovecots_learned_failure_delay(
    slow_dovecot: Dovecot, loop_thread: LoopThread
) -> None:
    config = make_config(slow_dovecot.port, limits={"auth_failure_delay": 1.0}, users=GUARDED)
    with running_proxy(config, loop_thread) as proxy:
        seen = [refusal_time(proxy.port, "alice", f"wrong{i}") for i in range(3)]
        policy = refusal_time(proxy.port, "bob")
    assert min(seen) > 1.0 + 0.3  # Dovecot is slower than the proxy's own floor
    # As slow as the slowest Dovecot refusal seen (those after the first were already held
    # to the learned floor themselves), not the proxy's 1 s.
    assert max(seen) - TOLERANCE < policy < max(seen) + MARGIN + TOLERANCE, (seen, policy)


def test_configured_floor_above_dovecots_delay_matches_from_the_first_refusal(
    slow_dovecot: Dovecot, loop_thread: LoopThread
) -> None:
    config = make_config(slow_dovecot.port, limits={"auth_failure_delay": DOVECOT_MAX},
                         users=GUARDED)
    with running_proxy(config, loop_thread) as proxy:
        policy = refusal_time(proxy.port, "bob")
        upstream = refusal_time(proxy.port, "alice", "wrong")
    assert abs(policy - upstream) < TOLERANCE, (policy, upstream)
