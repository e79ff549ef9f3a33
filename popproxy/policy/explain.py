"""What the policy does with one user from one address on one listener (``popproxy explain``).

Like ``doveadm auth test``: the same decision functions the proxy calls (``connect_decision``,
``user_decision``, ``route_for``), evaluated without a connection, so "why can alice not log in
from 10.1.2.3?" has an answer before anyone reads a log.  Lockout state needs the store and is
added by ``popproxy/explain_cli.py``.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from popproxy.policy.decisions import (
    Decision,
    IPAddress,
    connect_decision,
    route_for,
    rule_for,
    user_decision,
)
from popproxy.policy.schema import Listener, Policy, Upstream, UserRule

# Login methods as user rules name them (schema.Mechanism): USER/PASS and SASL PLAIN, LOGIN.
MECHANISMS = ("USER", "PLAIN", "LOGIN")


class UnknownListener(ValueError):
    """``--listener`` names no listener of the policy; the message lists those it has."""


@dataclass(frozen=True)
class Explanation:
    """Every decision for (user, source, listener), in the order a session meets them."""

    user: str
    client: IPAddress
    listener: Listener
    connect: Decision
    rule: UserRule | None
    # Per login method, with TLS as this listener gives it (after STLS on a starttls one).
    logins: dict[str, Decision]
    route: str
    upstream: Upstream

    @property
    def allowed(self) -> bool:
        """Some login method gets through (lockouts aside)."""
        return self.connect.allowed and any(d.allowed for d in self.logins.values())


def find_listener(config: Policy, name: str | None) -> Listener:
    """The listener called ``name``; the only one when ``name`` is None and there is one."""
    if name is None and len(config.listeners) == 1:
        return config.listeners[0]
    for listener in config.listeners:
        if listener.name == name:
            return listener
    names = ", ".join(listener.name for listener in config.listeners)
    raise UnknownListener(f"no listener {name!r}; the policy has: {names}" if name else
                          f"several listeners, choose one with --listener: {names}")


def explain(config: Policy, user: str, client: IPAddress, listener_name: str | None
            ) -> Explanation:
    """The decisions for ``user`` connecting from ``client`` to the named listener."""
    listener = find_listener(config, listener_name)
    # starttls: login is refused before STLS unless allow_plaintext_login, so a login there
    # has TLS; a plain listener (which needs allow_plaintext_login) never has it.
    tls = listener.mode != "plain"
    logins = {mech: user_decision(config, user, client, tls, mech) for mech in MECHANISMS}
    route, upstream = route_for(config, user)
    return Explanation(user, client, listener, connect_decision(listener, client),
                       rule_for(config.users, user), logins, route, upstream)


def _verdict(decision: Decision) -> str:
    return f"{'allowed' if decision.allowed else 'DENIED'} ({decision.reason})"


def describe(exp: Explanation) -> list[str]:
    """The explanation as ``key: value`` lines (what the command prints)."""
    lst, up = exp.listener, exp.upstream
    rule = f"users match {exp.rule.match!r}" if exp.rule is not None else "none (any user)"
    lines = [
        f"user: {exp.user}",
        f"from: {exp.client}",
        f"listener: {lst.name} ({lst.host}:{lst.port}, {lst.mode})",
        f"connect: {_verdict(exp.connect)}",
        f"user rule: {rule}",
    ]
    # RFC 2595 section 4 on a starttls listener: the client must issue STLS first.
    after_stls = ", after STLS" if lst.mode == "starttls" and not lst.allow_plaintext_login \
        else ""
    lines += [f"login {mech}: {_verdict(decision)}{after_stls if decision.allowed else ''}"
              for mech, decision in exp.logins.items()]
    lines += [f"route: {exp.route}",
              f"upstream: {up.host}:{up.port} ({up.mode}"
              f"{', verify off' if up.mode != 'plain' and not up.verify else ''})"]
    return lines
