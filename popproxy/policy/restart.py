"""What a reload cannot apply to a running proxy, said so an admin sees what to undo.

Listening sockets are bound once (a worker inherits its own), and ``state_dir`` holds what the
workers of a host share (host file, lockout key, certificates): a policy that changes either
is refused whole, and the message names each listener and what changed in it.
"""

from __future__ import annotations

from popproxy.policy.schema import Listener, Policy

_SOCKET_KEYS = ("host", "port", "mode")  # what a listening socket is made of


def restart_needed(current: Policy, new: Policy) -> str:
    """Why ``new`` needs a restart ("" if it can be swapped in live)."""
    changes = _listener_changes(current.listeners, new.listeners)
    if changes:
        return "listener names, addresses or modes changed (restart popproxy): " + \
            "; ".join(changes)
    if new.state_dir != current.state_dir:
        return f"state_dir changed (restart popproxy): {current.state_dir} -> {new.state_dir}"
    return ""


def _listener_changes(old: tuple[Listener, ...], new: tuple[Listener, ...]) -> list[str]:
    before, after = {lst.name: lst for lst in old}, {lst.name: lst for lst in new}
    changes = [f"{name} removed" for name in before if name not in after]
    changes += [f"{name} added" for name in after if name not in before]
    for name in (name for name in before if name in after):
        changes += [f"{name}: {key} {getattr(before[name], key)} -> {getattr(after[name], key)}"
                    for key in _SOCKET_KEYS
                    if getattr(before[name], key) != getattr(after[name], key)]
    if not changes and list(before) != list(after):
        changes.append("listeners reordered")
    return changes
