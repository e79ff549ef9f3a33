"""The policy as the rest of popproxy sees it: schema models and the loader, in one import."""

from popproxy.policy.loader import ConfigError, load_config, policy_files
from popproxy.policy.schema import (
    Certificate,
    Config,
    DemoUpstream,
    Limits,
    Listener,
    Lockout,
    LockoutLimit,
    Observability,
    ProxyProtocol,
    Route,
    Scan,
    Tls,
    Upstream,
    UserRule,
)

__all__ = [
    "Certificate",
    "Config",
    "ConfigError",
    "DemoUpstream",
    "Limits",
    "Listener",
    "Lockout",
    "LockoutLimit",
    "Observability",
    "ProxyProtocol",
    "Route",
    "Scan",
    "Tls",
    "Upstream",
    "UserRule",
    "load_config",
    "policy_files",
]
