"""Policy: YAML -> pydantic schema -> frozen objects.  No asyncio, no sockets.

The rest of popproxy imports from here: ``Policy`` (the whole validated policy, frozen; the
schema models are the runtime objects), its sections, and the loader.  The modules behind it:
``schema.py`` (the root and most sections), ``schema_scan.py`` (the ``scan`` section and its
conversion to the scanner's ``ScanSettings``), ``schema_lockout.py`` (``lockout``),
``schema_redis.py`` (their shared Redis keys), ``schema_base.py`` (shared building blocks),
``schema_warm.py`` (``warm_login``), ``loader.py`` (files -> ``Policy`` with ``FILE:LINE``
errors), ``decisions.py`` (decisions as values) and ``lockout.py`` (the lockout model).
"""

from popproxy.policy.loader import ConfigError, load_config, policy_files
from popproxy.policy.schema import (
    Certificate,
    DemoUpstream,
    Limits,
    Listener,
    Observability,
    Policy,
    ProxyProtocol,
    Route,
    Tls,
    Upstream,
    UserRule,
)
from popproxy.policy.schema_lockout import Lockout, LockoutLimit
from popproxy.policy.schema_scan import Scan, ScanThresholds
from popproxy.policy.schema_warm import WarmLogin

__all__ = [
    "Certificate",
    "ConfigError",
    "DemoUpstream",
    "Limits",
    "Listener",
    "Lockout",
    "LockoutLimit",
    "Observability",
    "Policy",
    "ProxyProtocol",
    "Route",
    "Scan",
    "ScanThresholds",
    "Tls",
    "Upstream",
    "UserRule",
    "WarmLogin",
    "load_config",
    "policy_files",
]
