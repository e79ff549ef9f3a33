"""The one place a Redis client is made, from the policy's frozen ``RedisTarget``.

Three shapes, all redis-py's own asyncio clients, all with the same bounded timeouts (a slow or
failing Redis must cost a login at most about a second, then ``fail_mode`` decides):

* ``redis_url``: one server, a blocking pool of REDIS_MAX_CONNECTIONS.
* ``redis_sentinel``: ``Sentinel(...).master_for(service)``.  Each new connection asks the
  sentinels for the current primary; a connection error (the primary died) or a READONLY reply
  (it came back as a replica) drops the connection, so the next call finds the promoted one.
* ``redis_cluster``: ``RedisCluster``, which learns the slot map from any listed node and
  follows MOVED/ASK redirections after a resharding or a failover.

Connections are opened on first use: a proxy starts while Redis is down, and fails per
``fail_mode`` until it is back.
"""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any

from popproxy.policy.schema_redis import (
    RedisAuth,
    RedisCluster,
    RedisSentinel,
    RedisTarget,
    RedisUrl,
    split_host_port,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster as ClusterClient

    SharedClient = Redis | ClusterClient

REDIS_TIMEOUT = 0.5  # seconds per Redis call: a slow Redis must not stall logins
REDIS_MAX_CONNECTIONS = 100  # per client and process (per node with Cluster)
# Cluster: redis-py retries a command after refreshing the slot map (a node died, a replica is
# being promoted); its default of 10 retries would outlast any login.  Three short tries, and
# the callers' own deadline (2 x REDIS_TIMEOUT) bounds them anyway.
CLUSTER_RETRIES = 3
CLUSTER_BACKOFF_BASE = 0.01  # seconds
CLUSTER_BACKOFF_CAP = 0.1  # seconds


def connect(target: RedisTarget) -> SharedClient:
    """A client for ``target`` (connections are opened on first use)."""
    if isinstance(target, RedisUrl):
        return connect_url(target.url)
    if isinstance(target, RedisSentinel):
        return _sentinel(target)
    return _cluster(target)


def connect_url(url: str) -> Redis:
    """A redis-py asyncio client with bounded timeouts.

    A blocking pool: when every connection is busy (a burst of logins or listings), a call
    waits up to REDIS_TIMEOUT for one; redis-py's default pool would fail it at once, and that
    would count as Redis being down.
    """
    import redis.asyncio as redis_asyncio  # imported late: only deployments with Redis pay

    pool = redis_asyncio.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
    return redis_asyncio.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def _auth_kwargs(auth: RedisAuth) -> dict[str, Any]:
    """Credentials, TLS and timeouts for a data node (not a sentinel)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT, "socket_connect_timeout": REDIS_TIMEOUT,
        "username": auth.username,
        "password": auth.password.get_secret_value() if auth.password else None,
    }
    if auth.tls:
        kwargs.update(ssl=True, ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_check_hostname=True,
                      ssl_ca_certs=str(auth.tls_ca_file) if auth.tls_ca_file else None)
    return kwargs


def _sentinel(target: RedisSentinel) -> Redis:
    from redis.asyncio.sentinel import Sentinel

    data = _auth_kwargs(target)
    # The sentinels get the same timeouts and TLS, and their own password (if any).
    sentinel_kwargs = {k: v for k, v in data.items() if k not in ("username", "password")}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password.get_secret_value()
    sentinels = Sentinel([split_host_port(node) for node in target.sentinels],
                         sentinel_kwargs=sentinel_kwargs)
    pool_class, client_class = _sentinel_classes()
    client: Redis = sentinels.master_for(
        target.service, redis_class=client_class, connection_pool_class=pool_class,
        db=target.db, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_TIMEOUT, **data)
    return client


@functools.cache
def _sentinel_classes() -> tuple[type[Any], type[Redis]]:
    """(pool, client) classes for :func:`_sentinel`, made once, on first use (late import)."""
    from redis.asyncio import Redis
    from redis.asyncio.connection import BlockingConnectionPool
    from redis.asyncio.sentinel import SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        """redis-py's Sentinel pool with the blocking pool's wait (see :func:`connect_url`).
        MRO: the Sentinel pool's address lookup, the blocking pool's get/release."""

    class SentinelMaster(Redis):
        """Closing the client also closes its connections to the sentinels, which redis-py's
        ``master_for`` client leaves open (a policy reload would leak them)."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            pool = self.connection_pool
            assert isinstance(pool, SentinelConnectionPool)  # master_for made it
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()

    return BlockingSentinelPool, SentinelMaster


def _cluster(target: RedisCluster) -> ClusterClient:
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.cluster import RedisCluster as ClusterClient
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    nodes = [ClusterNode(*split_host_port(node)) for node in target.nodes]
    retry = Retry(ExponentialBackoff(cap=CLUSTER_BACKOFF_CAP, base=CLUSTER_BACKOFF_BASE),
                  CLUSTER_RETRIES)
    return ClusterClient(startup_nodes=nodes, max_connections=REDIS_MAX_CONNECTIONS,
                         retry=retry, **_auth_kwargs(target))
