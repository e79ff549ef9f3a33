"""Where shared state lives: one Redis (``redis_url``), a Sentinel-watched primary, or a Cluster.

``lockout`` and ``scan`` both inherit :class:`SharedRedis`: at most one of its three keys is set.
The proxy builds its client from :attr:`SharedRedis.redis` alone (popproxy/proxy/redis_client.py),
so a key added here is honoured everywhere or nowhere.  Passwords are ``SecretStr``: a policy
printed, logged or dumped for a scan worker shows ``**********``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, model_validator

from popproxy.policy.schema_base import Model, check_redis_url

MAX_NODES = 64  # startup nodes or sentinels listed: more is a typo'd list, not a deployment
MAX_DB = 15  # Redis's default ``databases 16``; Cluster has only db 0


def _host_port(value: str) -> str:
    """``host:port`` or ``[v6]:port``; the canonical form is kept as given (it is a string)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 10.0.7.31:26379 or [2001:db8::31]:26379")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("an IPv6 address must be in brackets: [2001:db8::31]:26379")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address in brackets") from None
    elif ":" in host or any(c.isspace() for c in host):
        raise ValueError("must be host:port, e.g. 10.0.7.31:26379 or [2001:db8::31]:26379")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


def _node_count(nodes: tuple[str, ...]) -> tuple[str, ...]:
    # Checked after the items (a Field length would also fail when one item is bad).
    if not 1 <= len(nodes) <= MAX_NODES:
        raise ValueError(f"must list 1 to {MAX_NODES} host:port addresses")
    return nodes


Nodes = Annotated[tuple[HostPort, ...], AfterValidator(_node_count)]


def split_host_port(value: str) -> tuple[str, int]:
    """``"[::1]:26379"`` -> ``("::1", 26379)`` (the value was checked by :data:`HostPort`)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class RedisAuth(Model):
    """What a Sentinel's primary and a Cluster's nodes share: credentials and TLS."""

    username: str | None = None  # Redis 6 ACL user; unset: the ``default`` user
    # AUTH password of the Redis servers (with sentinels, theirs is sentinel_password);
    # printed, logged or dumped it shows **********.
    password: SecretStr | None = None
    # TLS to the Redis servers (and to the sentinels, if any), certificates and names verified.
    tls: bool = False
    # CA bundle for the servers' certificates (unset: the system's); names are verified.
    tls_ca_file: Path | None = None


class RedisSentinel(RedisAuth):
    """A primary that Redis Sentinel watches and fails over; the client asks the sentinels
    which server is the primary (again after every connection error)."""

    # host:port of the sentinels (1 to 64): list them all, so one down does not matter.
    sentinels: Nodes
    service: Annotated[str, Field(min_length=1)]  # ``sentinel monitor <service> ...``
    # Database number on the primary (Redis's default ``databases 16``: 0 to 15).
    db: Annotated[int, Field(ge=0, le=MAX_DB)] = 0
    # ``requirepass`` of the sentinels themselves, when they have one.
    sentinel_password: SecretStr | None = None


class RedisCluster(RedisAuth):
    """A Redis Cluster: any few of its nodes; the client learns the rest and the slot map."""

    # host:port of a few nodes (1 to 64); the client learns the others from whichever answers.
    nodes: Nodes


class RedisUrl(Model):
    """One Redis server, as a redis-py URL (``redis_url``)."""

    url: str


RedisTarget = RedisUrl | RedisSentinel | RedisCluster


class SharedRedis(Model):
    """The three ways to name shared state; a section sets at most one of them."""

    # One server, e.g. redis://:PASSWORD@10.0.7.30:6379/0 (rediss:// for TLS).  None of the
    # three: state stays on this host (scan first takes lockout's Redis, if any).
    redis_url: Annotated[str | None, AfterValidator(check_redis_url)] = None
    # Sentinel-managed primary and replicas: automatic failover (docs/scaling.md).
    redis_sentinel: RedisSentinel | None = None
    # Redis Cluster (docs/scaling.md: lockout keys share one slot, verdicts spread).
    redis_cluster: RedisCluster | None = None

    @model_validator(mode="after")
    def _one_redis(self) -> SharedRedis:
        chosen = [name for name in ("redis_url", "redis_sentinel", "redis_cluster")
                  if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ValueError(f"set one of redis_url, redis_sentinel, redis_cluster, not "
                             f"{' and '.join(chosen)}")
        return self

    @property
    def redis(self) -> RedisTarget | None:
        """The shared Redis this section names, if any (what the proxy connects to)."""
        if self.redis_url is not None:
            return RedisUrl(url=self.redis_url)
        return self.redis_sentinel or self.redis_cluster

    def redis_fields(self) -> dict[str, object]:
        """The three keys as set here: what ``scan`` takes over from ``lockout``."""
        return {"redis_url": self.redis_url, "redis_sentinel": self.redis_sentinel,
                "redis_cluster": self.redis_cluster}
