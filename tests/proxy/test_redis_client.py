"""redis_client.connect: each policy form gives redis-py's own client, with the bounded
timeouts and pool of REDIS_TIMEOUT / REDIS_MAX_CONNECTIONS (nothing is contacted here; the
clients against real servers: tests/integration/test_redis_ha.py, test_redis_cluster.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from popproxy.policy.schema_redis import RedisCluster, RedisSentinel, RedisUrl
from popproxy.proxy import redis_client
from popproxy.proxy.redis_client import REDIS_MAX_CONNECTIONS, REDIS_TIMEOUT, connect
from tests.support.ports import free_port


def test_a_url_gives_a_blocking_pool_with_bounded_timeouts() -> None:
    client = connect(RedisUrl(url="redis://:pw@10.0.7.30:6380/3"))
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (REDIS_MAX_CONNECTIONS, REDIS_TIMEOUT)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "10.0.7.30", 6380, 3, "pw")
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == REDIS_TIMEOUT


def test_sentinel_gives_the_master_of_the_service_through_a_blocking_pool() -> None:
    target = RedisSentinel(sentinels=("10.0.7.31:26379", "[::1]:26380"), service="popproxy",
                           password="pw", sentinel_password="spw", db=2)
    client = connect(target)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    # Both: the Sentinel pool asks for the primary, the blocking one waits for a connection.
    assert isinstance(pool, SentinelConnectionPool)
    assert isinstance(pool, BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (REDIS_MAX_CONNECTIONS, REDIS_TIMEOUT)
    assert pool.service_name == "popproxy" and pool.is_master
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (2, "pw",
                                                                           REDIS_TIMEOUT)
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"],
             s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
        ("10.0.7.31", 26379), ("::1", 26380)]
    sentinel_kwargs = sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "spw"  # the sentinels' own, not the data password
    assert sentinel_kwargs["socket_timeout"] == REDIS_TIMEOUT


def test_closing_a_sentinel_client_closes_its_sentinel_clients() -> None:
    """redis-py's master_for client leaves the sentinels' own clients open; ours closes them."""
    closed: list[int] = []

    async def run() -> None:
        client = connect(RedisSentinel(sentinels=("10.0.7.31:26379", "10.0.7.32:26379"),
                                       service="s"))
        assert isinstance(client, Redis)
        assert isinstance(client.connection_pool, SentinelConnectionPool)
        for number, sentinel in enumerate(client.connection_pool.sentinel_manager.sentinels):
            async def aclose(number: int = number) -> None:
                closed.append(number)
            sentinel.aclose = aclose
        await client.aclose()

    asyncio.run(run())
    assert closed == [0, 1]


def test_tls_is_required_and_verified(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    client = connect(RedisSentinel(sentinels=("h:1",), service="s", tls=True, tls_ca_file=ca))
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(ca) and kwargs["ssl_check_hostname"]
    assert client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"


def test_cluster_gives_redis_cluster_with_bounded_retries() -> None:
    client = connect(RedisCluster(nodes=("10.0.8.1:7000", "10.0.8.2:7001"), username="proxy",
                                  password="pw"))
    assert isinstance(client, ClusterClient)
    assert [(n.host, n.port) for n in client.startup_nodes] == [
        ("10.0.8.1", 7000), ("10.0.8.2", 7001)]
    assert client.retry.get_retries() == redis_client.CLUSTER_RETRIES
    kwargs = client.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("proxy", "pw")
    assert kwargs["socket_timeout"] == REDIS_TIMEOUT


def test_no_sentinel_answering_fails_within_the_bounded_time() -> None:
    """Every sentinel down: a call fails (fail_mode then decides) in well under a second per
    sentinel, not after redis-py's default waits."""
    target = RedisSentinel(sentinels=(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"),
                           service="popproxy")

    async def run() -> float:
        client = connect(target)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(RedisConnectionError):
                await client.ping()
            return loop.time() - start
        finally:
            await client.aclose()

    assert asyncio.run(run()) < 2 * REDIS_TIMEOUT * 2
