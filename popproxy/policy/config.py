"""The proxy's configuration: YAML -> pydantic schema -> frozen objects.

Every model is ``frozen`` and forbids unknown keys, so a typo is an error, not a silent default.
``load_config`` turns any problem into ``ConfigError`` whose lines read
``FILE:LINE: key.path: message``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from popproxy.policy.yamlpos import line_of, load_with_positions

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TlsVersion = Literal["TLSv1.2", "TLSv1.3"]


class Listener(_Model):
    """One address the proxy accepts clients on.

    mode ``tls``: implicit TLS (port 995 style); ``starttls``: plaintext until STLS (port 110
    style, RFC 2595); ``plain``: never TLS, only with ``allow_plaintext_login: true``.
    """

    name: str
    host: str = "127.0.0.1"
    port: Port
    mode: Literal["plain", "starttls", "tls"] = "starttls"
    # Let USER/PASS/AUTH through before TLS.  Off by default: passwords must not cross the
    # network in clear (RFC 2595 section 2.3 recommends this policy).
    allow_plaintext_login: bool = False

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


class Upstream(_Model):
    """The legacy POP3 server behind the proxy."""

    host: str = "127.0.0.1"
    port: Port = 110
    # plain, STLS (RFC 2595) or implicit TLS toward the legacy server.
    mode: Literal["plain", "starttls", "tls"] = "plain"
    # Certificate and host name checks (system CAs unless ca_file); off only explicitly.
    verify: bool = True
    ca_file: Path | None = None
    server_name: str | None = None  # name to verify and send as SNI; default: host
    tls_min_version: TlsVersion = "TLSv1.2"
    connect_timeout: Seconds = 10.0
    greeting_timeout: Seconds = 10.0
    # Longest silence from the upstream while we wait for (part of) a response.
    response_timeout: Seconds = 120.0


class Limits(_Model):
    """Named, configurable resource limits."""

    # RFC 1939 section 3: an autologout timer "MUST be of at least 10 minutes' duration".
    idle_timeout: Annotated[float, Field(ge=600, le=86400)] = 600.0
    max_sessions: Annotated[int, Field(ge=1)] = 1000
    max_sessions_per_ip: Annotated[int, Field(ge=1)] = 50
    # Failed logins in one connection before it is closed (slows online guessing).
    max_login_failures: Annotated[int, Field(ge=1, le=100)] = 3
    shutdown_grace: Annotated[float, Field(ge=0, le=3600)] = 30.0


class Certificate(_Model):
    """A certificate chain and its key; ``names`` are the SNI names it is chosen for."""

    cert: Path
    key: Path
    names: tuple[str, ...] = ()


class Tls(_Model):
    """Client-facing TLS.  With no certificates a self-signed one is made in state_dir."""

    certificates: tuple[Certificate, ...] = ()
    min_version: TlsVersion = "TLSv1.2"
    handshake_timeout: Seconds = 10.0


class DemoUpstream(_Model):
    """The built-in demo POP3 server (for trying the proxy out; never for production)."""

    enabled: bool = False


class Config(_Model):
    listeners: tuple[Listener, ...]
    upstream: Upstream = Upstream()
    limits: Limits = Limits()
    tls: Tls = Tls()
    # Where generated files (the self-signed certificate) live; relative to the working dir.
    state_dir: Path = Path("state")
    demo_upstream: DemoUpstream = DemoUpstream()

    @field_validator("listeners")
    @classmethod
    def _unique_names(cls, v: tuple[Listener, ...]) -> tuple[Listener, ...]:
        if not v:
            raise ValueError("at least one listener is needed")
        names = [listener.name for listener in v]
        if len(set(names)) != len(names):
            raise ValueError("listener names must be unique")
        return v


class ConfigError(Exception):
    """A configuration problem; ``details`` holds one ``FILE:LINE: key: message`` per error."""

    def __init__(self, details: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(details))
        self.details = details


def load_config(path: Path) -> Config:
    """Read, validate and freeze the configuration in ``path``."""
    try:
        data, positions = load_with_positions(path)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None

    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the top level must be a mapping"])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        details = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = line_of(positions, loc)
            where = f"{path}:{line}" if line else str(path)
            key = ".".join(str(part) for part in loc) or "(top level)"
            details.append(f"{where}: {key}: {error['msg']}")
        raise ConfigError(details) from None
