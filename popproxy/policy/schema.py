"""The policy schema: pydantic models mirroring the YAML, frozen, unknown keys forbidden.

A typo is an error, not a silent default.  ``popproxy schema`` prints the JSON Schema of
``Policy`` for editor completion.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    ValidationInfo,
    field_validator,
    model_validator,
)

from popproxy.policy.hints import parse_network
from popproxy.policy.schema_base import Model, Port, Seconds, TlsVersion
from popproxy.policy.schema_lockout import Lockout
from popproxy.policy.schema_scan import Scan
from popproxy.policy.schema_warm import WarmLogin

# A worker is a whole interpreter (tens of MB); more than this per host is a typo, not a plan.
MAX_WORKERS = 256
Workers = Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_WORKERS)]

# The accept queue of a listener (listen(2)).  A full queue drops the client's SYN, and the
# client waits for its retransmission (1, 3, 7, 15, 31 s...): with asyncio's default of 100 the
# soak's 1,000 clients connecting at once overflowed it, and on uvloop hundreds of TLS
# handshakes waited over 60 s (docs/scaling.md, "The accept queue").  4096 holds a burst of
# max_sessions' default 1,000 several times over; the kernel caps it at net.core.somaxconn
# (4096 by default since Linux 5.4).  Precedents: nginx 511, haproxy its maxconn.
LISTEN_BACKLOG = 4096

IPV4_MAPPED_PREFIX = 96  # ::ffff:0:0/96 (RFC 4291 section 2.5.5.2)


def _unmapped(network: ipaddress.IPv4Network | ipaddress.IPv6Network
              ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``::ffff:192.0.2.0/120`` is the IPv4 network 192.0.2.0/24 written in IPv6 form.

    Client addresses are compared as IPv4 when they are IPv4-mapped (a dual-stack socket or a
    PROXY header shows ``::ffff:192.0.2.7`` for 192.0.2.7), so a mapped network must be too,
    or it would never match anything.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= IPV4_MAPPED_PREFIX:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - IPV4_MAPPED_PREFIX))
    return network


# A client network in allow/deny/trusted lists; IPv4-mapped IPv6 networks become IPv4.  A bad
# one is named with the fix (parse_network: "10.0.0.1/24: host bits set, did you mean ...").
ClientNetwork = Annotated[IPvAnyNetwork, BeforeValidator(parse_network),
                          AfterValidator(_unmapped)]


class ProxyProtocol(Model):
    """HAProxy PROXY protocol v1/v2 on a listener: accepted only from ``trusted`` peers."""

    # The balancers' networks.  A connection from any other peer is closed: direct clients
    # cannot use this listener (popproxy_proxy_protocol_rejects_total{reason="untrusted_peer"}).
    trusted: Annotated[tuple[ClientNetwork, ...], Field(min_length=1)]
    # The header must arrive this fast, before anything else is read.
    header_timeout: Seconds = 5.0


class Listener(Model):
    """One address the proxy accepts clients on.

    mode ``tls``: implicit TLS (port 995 style); ``starttls``: plaintext until STLS (port 110
    style, RFC 2595); ``plain``: never TLS, only with ``allow_plaintext_login: true``.
    """

    # Unique; labels this listener's metrics, log lines and audit events (`explain --listener`).
    name: str
    # IP address or host name to listen on (0.0.0.0 or :: for all); an IPv6 socket is IPv6-only,
    # so IPv4 clients need a listener of their own.  Name, host, port, mode: restart to change.
    host: str = "127.0.0.1"
    # 110 for plain and starttls, 995 for tls (RFC 8314); one listener per host and port.
    port: Port
    # tls: TLS from the first byte (RFC 8314); starttls: login only after STLS (RFC 2595
    # section 4) unless allow_plaintext_login; plain: never TLS (docs/tls.md).
    mode: Literal["plain", "starttls", "tls"] = "starttls"
    # Let USER/PASS/AUTH through before TLS.  Off by default: passwords must not cross the
    # network in clear (RFC 2595 section 2.3 recommends this policy).
    allow_plaintext_login: bool = False
    # Overrides tls.min_version for this listener.
    tls_min_version: TlsVersion | None = None
    # Client networks: ``deny`` wins; a non-empty ``allow`` admits only its networks.
    allow: tuple[ClientNetwork, ...] = ()
    # Refused networks: closed without a byte (no greeting, no TLS handshake); behind
    # proxy_protocol, the client address its header gives.
    deny: tuple[ClientNetwork, ...] = ()
    proxy_protocol: ProxyProtocol | None = None

    @model_validator(mode="after")
    def _plain_needs_consent(self) -> Listener:
        if self.mode == "plain" and not self.allow_plaintext_login:
            raise ValueError(
                "a plain listener sends passwords in clear: set allow_plaintext_login: true "
                "to accept that, or use mode starttls or tls"
            )
        return self

    @field_validator("host")
    @classmethod
    def _ip_or_name(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if not v or any(c.isspace() for c in v):
                raise ValueError("must be an IP address or a host name") from None
        return v


class Upstream(Model):
    """The legacy POP3 server behind the proxy."""

    # Address or host name; a name is looked up at each connect, its addresses tried in order.
    host: str = "127.0.0.1"
    # 110 whatever the mode: set 995 (or the server's port) for mode tls.
    port: Port = 110
    # plain, STLS (RFC 2595) or implicit TLS toward the legacy server.
    mode: Literal["plain", "starttls", "tls"] = "plain"
    # Certificate and host name checks (system CAs unless ca_file); off only explicitly.
    verify: bool = True
    # PEM bundle of the CA(s) that signed the upstream's certificate (an internal CA), used
    # instead of the system's; starttls and tls modes only.
    ca_file: Path | None = None
    server_name: str | None = None  # name to verify and send as SNI; default: host
    # Oldest TLS version accepted from the upstream (starttls, tls); nothing older than 1.2.
    tls_min_version: TlsVersion = "TLSv1.2"
    # Seconds to reach the upstream at a login (lookup and TCP connect); past it the client gets
    # -ERR [SYS/TEMP] upstream server unavailable (RFC 3206).  Part of limits.login_timeout.
    connect_timeout: Seconds = 10.0
    # Seconds for each step after connecting: the TLS handshake (tls, after STLS), the +OK
    # greeting (RFC 1939 section 4) and the CAPA answer (RFC 2449); slower is unavailable.
    greeting_timeout: Seconds = 10.0
    # Longest silence from the upstream while we wait for (part of) a response.
    response_timeout: Seconds = 120.0
    # `popproxy warm`'s master-user login (schema_warm.py); unset: warm refuses this upstream.
    warm_login: WarmLogin | None = None


class Limits(Model):
    """Named, configurable resource limits."""

    # RFC 1939 section 3: an autologout timer "MUST be of at least 10 minutes' duration".
    idle_timeout: Annotated[float, Field(ge=600, le=86400)] = 600.0
    # From accept to a successful login (TLS handshake, STLS and AUTH exchanges included): a
    # client that never logs in must not hold a session slot for the idle timeout's 10 minutes
    # a byte at a time.  60 s leaves a person typing a password and a slow link plenty.
    login_timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Client sessions at once on this host, all workers together; the next connection is
    # refused (docs/policy.md, "Over capacity").  With workers, a reload may raise it to twice
    # its value at start (more if the shared table has room); beyond that, restart.
    max_sessions: Annotated[int, Field(ge=1)] = 1000
    # Of those, what one source may hold (lockout.ipv4_prefix/ipv6_prefix, the PROXY header's
    # address): a NAT or a balancer without PROXY protocol is one source.
    max_sessions_per_ip: Annotated[int, Field(ge=1)] = 50
    # Connections each listener's kernel queue holds until popproxy accepts them (listen(2)
    # backlog, capped by net.core.somaxconn): a burst beyond it waits for SYN retransmissions
    # of 1 s and more (docs/scaling.md).  A reload resizes every listener's queue in place
    # (listen(2) again).
    listen_backlog: Annotated[int, Field(ge=1, le=65535)] = LISTEN_BACKLOG
    # Failed logins in one connection before it is closed (slows online guessing).
    max_login_failures: Annotated[int, Field(ge=1, le=100)] = 3
    # Every failed password check is answered no sooner than this (hides whether the
    # upstream, the policy or a missing account said no), or than the routed upstream's own
    # failure delay once learned (proxy/failure_timing.py; Dovecot's is 1.5-2 s).
    auth_failure_delay: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Seconds open sessions get to finish on SIGTERM (systemctl stop, a worker drained), then
    # they are cut: the upstream is closed without QUIT, so nothing the client deleted is
    # committed (RFC 1939 section 6: only QUIT enters the UPDATE state).
    shutdown_grace: Annotated[float, Field(ge=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _login_fits(self) -> Limits:
        if self.login_timeout <= self.auth_failure_delay:
            raise ValueError(f"login_timeout ({self.login_timeout:g} s) must be longer than "
                             f"auth_failure_delay ({self.auth_failure_delay:g} s), or no failed "
                             "login could ever be answered")
        return self


class Certificate(Model):
    """A certificate chain and its key; ``names`` are the SNI names it is chosen for."""

    # PEM, the full chain: leaf first, then intermediates.  Re-read on reload (SIGHUP).
    cert: Path
    # Its PEM private key (may be cert's file); readable by every user: check-config fails.
    key: Path
    # Exact, case-insensitive SNI names, no wildcards; no match or no SNI: the first certificate.
    names: tuple[str, ...] = ()


class Tls(Model):
    """Client-facing TLS.  With no certificates a self-signed one is made in state_dir."""

    certificates: tuple[Certificate, ...] = ()
    # Oldest TLS version clients may use (a listener's tls_min_version overrides it).
    min_version: TlsVersion = "TLSv1.2"
    # Seconds a client's handshake may take (tls, or after STLS: RFC 2595); then it is closed.
    handshake_timeout: Seconds = 10.0


class Observability(Model):
    """Where metrics are served and the audit log is written."""

    # /metrics, /healthz and /readyz on this address (no port: no HTTP endpoint).
    metrics_host: str = "127.0.0.1"
    # TCP port of that HTTP endpoint; with workers it is served once for the host.
    metrics_port: Port | None = None
    # JSON lines audit log: a file path, "-" for standard error, or none.
    audit_log: str | None = None


class DemoUpstream(Model):
    """The built-in demo POP3 server (for trying the proxy out; never for production)."""

    # true: a POP3 server with sample mail in memory listens on upstream.host and upstream.port.
    enabled: bool = False


Mechanism = Literal["USER", "PLAIN", "LOGIN"]


def _check_pattern(value: str) -> str:
    """User patterns: exact name, ``*@domain``, or a glob (``*``, ``?``, ``[...]``)."""
    if not value or any(c.isspace() or c in "\0\r\n" for c in value):
        raise ValueError("must be a non-empty user name or pattern without spaces")
    return value


UserPattern = Annotated[str, Field(min_length=1)]


class UserRule(Model):
    """Per-user rule; the first rule whose ``match`` fits the user name applies."""

    # Exact name, *@domain or glob (*, ?, [...]), case-insensitive; the first match wins.  A
    # rule an earlier one always wins over (the same pattern, *, *@domain before a name in it)
    # is an error; other overlaps are not found: put specific rules first.
    match: UserPattern
    # Networks this user may log in from (empty: any network the listener admits).
    allow: tuple[ClientNetwork, ...] = ()
    # No login without TLS, answered like a wrong password (only matters where
    # allow_plaintext_login lets logins through before TLS).
    require_tls: bool = False
    # Login methods this user may use (empty: all): USER (USER/PASS), PLAIN, LOGIN (SASL).
    mechanisms: tuple[Mechanism, ...] = ()

    @field_validator("match")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return _check_pattern(v)


class Route(Model):
    """Send users whose name fits ``match`` to the named upstream (first match wins)."""

    # User name pattern, as for users.N.match.
    match: UserPattern
    # "default" (the upstream section) or a name in upstreams; an unknown name is an error.
    upstream: str

    @field_validator("match")
    @classmethod
    def _pattern(cls, v: str) -> str:
        return _check_pattern(v)


class Policy(Model):
    listeners: tuple[Listener, ...]
    # The default upstream; ``upstreams`` adds named ones that ``routes`` can pick.
    upstream: Upstream = Upstream()
    upstreams: dict[str, Upstream] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    users: tuple[UserRule, ...] = ()
    limits: Limits = Limits()
    tls: Tls = Tls()
    # Where generated files (the self-signed certificate) live; like every relative path in a
    # policy, relative to the policy's directory (paths.py), not the working directory.
    state_dir: Path = Path("state")
    observability: Observability = Observability()
    # Failed-login throttling per account, network and pair (docs/lockouts.md).
    lockout: Lockout = Lockout()
    # Message scanning (docs/scanning.md).  Validated even when absent: it may take
    # lockout's Redis (see _scan_redis_url).
    scan: Annotated[Scan, Field(validate_default=True)] = Scan()
    demo_upstream: DemoUpstream = DemoUpstream()
    # Worker processes: "auto" (one per usable CPU) or a number; 1 is one process.  `run
    # --workers` overrides it; a reload cannot change it (docs/scaling.md).
    workers: Workers = Field("auto", description=(
        "Worker processes that serve sessions: 'auto' (one per usable CPU, "
        "os.sched_getaffinity) or a number; 1 runs everything in one process as before. "
        "`popproxy run --workers` overrides it; a reload cannot change it (docs/scaling.md)."))

    @field_validator("listeners")
    @classmethod
    def _some_listener(cls, v: tuple[Listener, ...]) -> tuple[Listener, ...]:
        if not v:
            raise ValueError("at least one listener is needed")
        return v

    @field_validator("scan")
    @classmethod
    def _scan_redis_url(cls, scan: Scan, info: ValidationInfo) -> Scan:
        """No Redis in ``scan`` (``redis_url``, ``redis_sentinel``, ``redis_cluster``): share
        verdicts through the lockout counters' Redis, if any.

        ``lockout`` is declared (so validated) before ``scan``; it is missing from ``info.data``
        only when it was invalid, and then that error is reported.
        """
        lockout = info.data.get("lockout")
        if scan.redis is None and isinstance(lockout, Lockout) and lockout.redis is not None:
            return scan.model_copy(update=lockout.redis_fields())
        return scan


Problem = tuple[tuple[str | int, ...], str]  # (key path, message)


def semantic_problems(config: Policy) -> list[Problem]:
    """Rules across entries (checked after the schema), each with the key path to blame."""
    problems: list[Problem] = []
    seen_names: dict[str, int] = {}
    seen_sockets: dict[tuple[str, int], int] = {}
    for index, listener in enumerate(config.listeners):
        if listener.name in seen_names:
            problems.append((("listeners", index, "name"), f"listener name {listener.name!r} "
                             f"already used by listeners.{seen_names[listener.name]}"))
        seen_names.setdefault(listener.name, index)
        sock = (listener.host, listener.port)
        if sock in seen_sockets:
            problems.append((("listeners", index, "port"), f"{sock[0]} port {sock[1]} already "
                             f"used by listeners.{seen_sockets[sock]}"))
        seen_sockets.setdefault(sock, index)
    for index, route in enumerate(config.routes):
        if route.upstream != "default" and route.upstream not in config.upstreams:
            known = ", ".join(["default", *config.upstreams])
            problems.append((("routes", index, "upstream"),
                             f"unknown upstream {route.upstream!r}; known: {known}"))
    problems += _shadowed("users", [rule.match for rule in config.users])
    problems += _shadowed("routes", [route.match for route in config.routes])
    return problems


def _shadowed(section: str, patterns: list[str]) -> list[Problem]:
    """A rule that an earlier rule always wins over can never match: that is a config bug."""
    problems: list[Problem] = []
    for later_index, later in enumerate(patterns):
        for early_index, early in enumerate(patterns[:later_index]):
            if _covers(early, later):
                problems.append(((section, later_index, "match"),
                                 f"{later!r} can never match: {section}.{early_index} "
                                 f"({early!r}) matches first"))
                break
    return problems


def _covers(early: str, later: str) -> bool:
    if early == later or early == "*":
        return True
    # "*@example.com" covers every name in that domain without further wildcards.
    if early.startswith("*@") and not any(c in early[2:] for c in "*?["):
        return later.lower().endswith(early[1:].lower()) and not any(
            c in later[: -len(early) + 1] for c in "*?["
        )
    return False



