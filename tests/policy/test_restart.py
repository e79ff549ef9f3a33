"""A reload that would need new sockets or another state_dir is refused, saying what changed
(an admin had "listener names, addresses or modes, or state_dir changed" and a diff to do)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from popproxy.policy import Policy
from popproxy.policy.restart import restart_needed


def _policy(*listeners: dict[str, Any], state_dir: str = "/var/lib/popproxy") -> Policy:
    return Policy.model_validate({"listeners": list(listeners), "state_dir": state_dir})


A = {"name": "pop3", "port": 1110, "mode": "starttls"}
B = {"name": "pop3s", "port": 1995, "mode": "tls"}


def test_each_changed_listener_and_key_is_named() -> None:
    moved = {**A, "port": 2110, "host": "0.0.0.0"}
    assert restart_needed(_policy(A, B), _policy(moved, {**B, "mode": "starttls"})) == (
        "listener names, addresses or modes changed (restart popproxy): "
        "pop3: host 127.0.0.1 -> 0.0.0.0; pop3: port 1110 -> 2110; pop3s: mode tls -> starttls")


def test_added_removed_and_reordered_listeners() -> None:
    assert restart_needed(_policy(A), _policy(B)).endswith(": pop3 removed; pop3s added")
    assert restart_needed(_policy(A, B), _policy(B, A)).endswith(": listeners reordered")


def test_state_dir_and_nothing() -> None:
    assert restart_needed(_policy(A), _policy(A, state_dir="/srv/p")) == (
        f"state_dir changed (restart popproxy): {Path('/var/lib/popproxy')} -> {Path('/srv/p')}")
    other_limits = _policy(A).model_copy(update={"workers": 3})
    assert restart_needed(_policy(A), other_limits) == ""
