"""Throw-away Redis Sentinel sets and Redis Clusters (real ``redis-server`` processes).

``start_sentinel_set()``: a primary, one replica and three sentinels (``redis-server
--sentinel``, quorum 2, ``down-after-milliseconds`` DOWN_AFTER_MS) watching service SERVICE;
data nodes and sentinels each require a password (DATA_PASSWORD, SENTINEL_PASSWORD).
``start_cluster()``: three ``--cluster-enabled yes`` primaries (DATA_PASSWORD) joined by
``redis-cli --cluster create``.  Everything listens on free loopback ports, keeps nothing on
disk and lives in its own temporary directory; the system's Redis and /etc/redis are never
touched.  Like redis_server.py, a server that does not come up raises ``RedisUnavailable``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.integration.procs import die_with_parent
from tests.integration.redis_server import RedisUnavailable
from tests.support.ports import free_port

SERVICE = "popproxy"
QUORUM = 2
# Small so that a test sees a failover in a few seconds (production: 5000 to 30000).
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 5000
CLUSTER_NODE_TIMEOUT_MS = 2000
START_TIMEOUT = 10.0
# Sentinels find the replica and each other through the primary's hello channel (every 2 s).
DISCOVERY_TIMEOUT = 20.0
NO_DISK = ["--save", "", "--appendonly", "no"]
# The Sentinel set requires passwords, as production should: the data nodes' and the sentinels'
# own, so the proxy's use of both is exercised (test values only).
DATA_PASSWORD = "data-Pw-7TqX"
SENTINEL_PASSWORD = "sentinel-Pw-3LxV"


@dataclass
class Node:
    """One redis-server (data node or sentinel) on 127.0.0.1:``port``."""

    port: int
    root: Path
    argv: list[str]
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5)

    def start(self) -> None:
        log = self.root / "redis.log"
        self.proc = subprocess.Popen(
            [*self.argv, "--logfile", str(log)], cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        client = self.client()
        try:
            wait(lambda: _pings(client, self.proc, log), f"redis on {self.port}", START_TIMEOUT,
                 lambda: _tail(log))
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no last replication."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def _pings(client: redis.Redis, proc: subprocess.Popen[bytes] | None, log: Path) -> bool:
    if proc is None or proc.poll() is not None:
        raise RedisUnavailable(f"redis-server exited with {proc and proc.returncode}: "
                               f"{_tail(log)}")
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def wait(condition: Callable[[], bool], what: str, timeout: float,
         detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"timed out after {timeout}s waiting for {what}\n"
                                   f"{detail()[-2000:]}")
        time.sleep(0.05)


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server not found (Debian package redis-server)")
    return binary


def _node(binary: str, base: Path, name: str, extra: list[str]) -> Node:
    port = free_port()
    root = base / name
    root.mkdir()
    return Node(port, root, [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(root), "--daemonize", "no", *NO_DISK, *extra])


def _sentinel(binary: str, base: Path, name: str, primary: Node) -> Node:
    port = free_port()
    root = base / name
    root.mkdir()
    conf = root / "sentinel.conf"  # the sentinel rewrites it: its own copy
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {root}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} {QUORUM}\n"
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
        f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"  # and the sentinels' own, between themselves too
        f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n")
    return Node(port, root, [binary, str(conf), "--sentinel"], SENTINEL_PASSWORD)


@dataclass
class SentinelSet:
    base: Path
    primary: Node
    replica: Node
    sentinels: list[Node] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def nodes(self) -> list[Node]:
        return [self.primary, self.replica, *self.sentinels]

    def master_port(self, sentinel: Node | None = None) -> int | None:
        """The primary's port as a sentinel sees it (None: it does not answer)."""
        client = (sentinel or self.sentinels[0]).client()
        try:
            addr = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(addr[1]) if isinstance(addr, tuple) else None
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _discovered(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                replicas = client.sentinel_slaves(SERVICE)
                peers = client.sentinel_sentinels(SERVICE)
                if not isinstance(peers, list) or (len(replicas), len(peers)) != (
                        1, len(self.sentinels) - 1):
                    return False
            finally:
                client.close()
        return True

    def current(self) -> Node:
        """The node the sentinels name primary now."""
        port = self.master_port()
        return next(node for node in (self.primary, self.replica) if node.port == port)


def start_sentinel_set() -> SentinelSet:
    binary = _binary()
    base = Path(tempfile.mkdtemp(prefix="popproxy-sentinel-"))
    auth = ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
    primary = _node(binary, base, "primary", auth)
    replica = _node(binary, base, "replica", [*auth, "--replicaof", "127.0.0.1", "PRIMARY"])
    replica.argv[replica.argv.index("PRIMARY")] = str(primary.port)
    primary.password = replica.password = DATA_PASSWORD
    ha = SentinelSet(base, primary, replica,
                     [_sentinel(binary, base, f"sentinel{n}", primary) for n in range(3)])
    try:
        for node in ha.nodes():
            node.start()
        wait(ha._discovered, "the sentinels to see the replica and each other",
             DISCOVERY_TIMEOUT)
    except BaseException:
        cleanup(ha.base, ha.nodes())
        raise
    return ha


@dataclass
class Cluster:
    base: Path
    nodes: list[Node]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def role(self, node: Node) -> str:
        """``master`` or ``slave`` (``INFO replication``), ``down`` if it does not answer."""
        client = node.client()
        try:
            return str(client.info("replication")["role"])
        except redis.RedisError:
            return "down"
        finally:
            client.close()

    def primaries(self) -> list[Node]:
        return [node for node in self.nodes if self.role(node) == "master"]


def cluster_ok(node: Node) -> bool:
    client = node.client()
    try:
        info = client.cluster("INFO")  # parsed by redis-py into {field: value}
        return isinstance(info, dict) and info.get("cluster_state") == "ok"
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_cluster(size: int = 3, replicas: int = 0) -> Cluster:
    """``size`` primaries with ``replicas`` replicas each, every slot assigned."""
    binary = _binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RedisUnavailable("redis-cli not found (Debian package redis-tools)")
    base = Path(tempfile.mkdtemp(prefix="popproxy-cluster-"))
    cluster = Cluster(base, [
        # The bus port is port + 10000 unless named: a free port of its own (Redis 7).
        _node(binary, base, f"node{n}", ["--cluster-enabled", "yes", "--cluster-config-file",
                                         "nodes.conf", "--cluster-node-timeout",
                                         str(CLUSTER_NODE_TIMEOUT_MS), "--cluster-port",
                                         str(free_port()), "--requirepass", DATA_PASSWORD,
                                         "--masterauth", DATA_PASSWORD])
        for n in range(size * (1 + replicas))])
    for node in cluster.nodes:
        node.password = DATA_PASSWORD
    try:
        for node in cluster.nodes:
            node.start()
        created = subprocess.run(
            [cli, "--no-auth-warning", "-a", DATA_PASSWORD, "--cluster", "create",
             *cluster.addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60, check=False)
        if created.returncode != 0:
            raise RedisUnavailable(f"redis-cli --cluster create failed: {created.stdout!r}"
                                   f"{created.stderr!r}")
        for node in cluster.nodes:
            wait(functools.partial(cluster_ok, node), f"cluster_state:ok on {node.port}",
                 DISCOVERY_TIMEOUT)
    except BaseException:
        cleanup(base, cluster.nodes)
        raise
    return cluster


def cleanup(base: Path, nodes: list[Node]) -> None:
    for node in nodes:
        node.kill()
    shutil.rmtree(base, ignore_errors=True)
