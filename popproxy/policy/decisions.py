"""Policy decisions as values: who may connect, who may log in how, and where they go.

Nothing here raises for a denial; callers get a ``Decision`` and act on it (reply, log, count).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from popproxy.policy.schema import Listener, Policy, Upstream, UserRule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_UPSTREAM = "default"


@dataclass(frozen=True, slots=True)
class Decision:
    """``allowed`` plus a short reason for logs and audit (never shown to the client)."""

    allowed: bool
    reason: str


# Peer addresses parsed lately: parsing one is ~16 Python calls (ipaddress), done at every
# connection, and clients reconnect from the same few addresses (NAT, balancers, pollers).
# Bounded, and the objects are immutable, so sharing them is safe.
PARSED_ADDRESSES = 4096


@functools.lru_cache(maxsize=PARSED_ADDRESSES)
def parse_address(text: str) -> IPAddress | None:
    """A peer address as an IP; IPv4-mapped IPv6 (dual-stack sockets) becomes plain IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return unmapped(address)


def unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.7``) as the IPv4 address it stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress, networks: Iterable[Network]) -> bool:
    """Mapped addresses are matched as IPv4, like the networks (schema.ClientNetwork)."""
    address = unmapped(address)
    return any(address.version == net.version and address in net for net in networks)


def connect_decision(listener: Listener, client: IPAddress | None) -> Decision:
    """At accept time: the listener's ``deny`` wins, then a non-empty ``allow`` must match."""
    if client is None:
        return Decision(False, "client address unknown")
    if listener.deny and in_networks(client, listener.deny):  # (most listeners deny none)
        return Decision(False, "source network denied by listener")
    if listener.allow and not in_networks(client, listener.allow):
        return Decision(False, "source network not in listener allow list")
    return LISTENER_ALLOWS


LISTENER_ALLOWS = Decision(True, "listener allows source")  # immutable: one for every accept


def user_matches(pattern: str, username: str) -> bool:
    """Case-insensitive match of an exact name, ``*@domain`` or glob pattern."""
    return fnmatch.fnmatchcase(username.casefold(), pattern.casefold())


def rule_for(rules: tuple[UserRule, ...], username: str) -> UserRule | None:
    return next((rule for rule in rules if user_matches(rule.match, username)), None)


NO_USER_RULE = Decision(True, "no user rule")  # immutable: one for every login


def user_decision(
    config: Policy, username: str, client: IPAddress | None, tls_active: bool, mechanism: str
) -> Decision:
    """After the username is known: per-user networks, TLS and login mechanism."""
    if not config.users:  # the common case: no rules to match, nothing to build
        return NO_USER_RULE
    rule = rule_for(config.users, username)
    if rule is None:
        return NO_USER_RULE
    if rule.allow and (client is None or not in_networks(client, rule.allow)):
        return Decision(False, f"source network not allowed for users matching {rule.match!r}")
    if rule.require_tls and not tls_active:
        return Decision(False, f"TLS required for users matching {rule.match!r}")
    if rule.mechanisms and mechanism not in rule.mechanisms:
        return Decision(False, f"{mechanism} not allowed for users matching {rule.match!r}")
    return Decision(True, f"user rule {rule.match!r}")


def route_for(config: Policy, username: str) -> tuple[str, Upstream]:
    """The upstream for ``username``: the first matching route, else the default upstream."""
    for route in config.routes:
        if user_matches(route.match, username):
            if route.upstream == DEFAULT_UPSTREAM:
                break
            return route.upstream, config.upstreams[route.upstream]
    return DEFAULT_UPSTREAM, config.upstream
