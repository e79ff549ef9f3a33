"""Scale-out as deployed: HAProxy in front of two popproxy processes that share Redis.

Everything is real and on loopback: one ``redis-server``, two ``python -m popproxy run``
processes (A and B, each with its own state_dir, audit log and demo upstream port, both with the
same certificate, ``lockout.secret_file`` and ``redis_url``), and one HAProxy (TCP mode,
``send-proxy-v2`` from 127.0.0.1, the only address popproxy trusts for PROXY headers) with three
frontends: ``lb`` balances ``roundrobin`` over A and B with health checks, as in production;
``a`` and ``b`` are pinned to one instance each, so a test knows who served a connection.
Clients connect to HAProxy from chosen loopback addresses (127.0.0.2 the user, 127.0.0.3 the
guesser), so lockouts can only come out right if both processes keyed them on the address in the
PROXY header.

Proves: failures counted at A block the same account+source at B within 100 ms; the lockout
lives in Redis, not in A, so SIGKILLing A loses nothing; the real user from another address keeps
logging in through the balancer, before and after A dies; roundrobin really spreads the logins;
a message judged at A is listed and delivered by B with the same size and action, from the
verdict cache shared in Redis, without B scanning it (RFC 1939: sizes stay what they were).
Scanning uses a blocklist feed listing the demo mailbox's link host; each instance has its own
copy with its own mtime, as hosts that fetch a feed at different times would.
"""

from __future__ import annotations

import json
import os
import poplib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.integration import haproxy as haproxy_mod
from tests.integration.procs import die_with_parent as _die_with_parent
from tests.integration.procs import stop_process
from tests.integration.redis_server import RedisServer
from tests.support.ports import free_port

LB_SOURCE = "127.0.0.1"  # HAProxy's backend source: the only PROXY sender popproxy trusts
USER_ADDR, GUESSER = "127.0.0.2", "127.0.0.3"
LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later"
AUTH_FAILED = b"-ERR [AUTH] authentication failed"
WRONG = ("Wrong-Guess-1", "Wrong-Guess-2", "Wrong-Guess-3")  # pair.block_after: 3
WELCOME = b"This message came through the proxy."
START_TIMEOUT = 20.0
TCP_LISTEN = "0A"
# The demo mailbox's third message links to www.example.test: the feed makes it phishing
# (link-feed-host, score 7: defang).  A relative path: each instance reads its own copy.
FEED, FEED_HOSTS, LINK_MESSAGE = "phish-hosts.txt", "# test feed\nwww.example.test\n", 3


def _listening(port: int) -> bool:
    """Read from /proc so that waiting opens no connection (HAProxy would forward it)."""
    wanted = f"0100007F:{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(f[1] == wanted and f[3] == TCP_LISTEN
               for f in (line.split() for line in lines) if len(f) > 3)


def _wait(condition: Callable[[], bool], what: str, timeout: float,
          log: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{log()[-3000:]}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- popproxy processes
@dataclass
class Instance:
    """One ``popproxy run`` process."""

    name: str
    port: int
    metrics_port: int  # /healthz for HAProxy's checks
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.root / "popproxy.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def audit(self, event: str, **match: object) -> list[dict[str, Any]]:
        path = self.root / "audit.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()] if (
            path.exists()) else []
        return [r for r in records
                if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def logins(self, client: str, result: str) -> int:
        return len(self.audit("login", client=client, result=result))

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``, from /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"popproxy {self.name} exited with {self.proc.returncode}:\n"
                            f"{self.log_text()[-3000:]}")
            return "popproxy ready" in self.log_text()

        _wait(ready, f"popproxy {self.name} to start", START_TIMEOUT, self.log_text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _policy(root: Path, port: int, metrics_port: int, pki: Path, secret: Path,
            redis_url: str) -> dict[str, Any]:
    return {
        "listeners": [{
            "name": "pop3s-lb", "host": "127.0.0.1", "port": port, "mode": "tls",
            "proxy_protocol": {"trusted": [f"{LB_SOURCE}/32"], "header_timeout": 5},
        }],
        # The same certificate on every instance: clients cannot tell which one they reached.
        "tls": {"certificates": [{"cert": str(pki), "key": str(pki), "names": ["localhost"]}]},
        # Each process runs its own demo upstream (user demo / demo), so each needs a port.
        "upstream": {"host": "127.0.0.1", "port": _port(), "mode": "plain"},
        "demo_upstream": {"enabled": True},
        "state_dir": str(root / "state"),
        "limits": {"auth_failure_delay": 0.01, "shutdown_grace": 1},
        "lockout": {"redis_url": redis_url, "secret_file": str(secret),
                    "pair": {"free": 1, "block_after": len(WRONG)},
                    "base_delay": 0.01, "max_delay": 0.05},
        "observability": {"audit_log": str(root / "audit.jsonl"),
                          "metrics_host": "127.0.0.1", "metrics_port": metrics_port},
        # No scan.redis_url: verdicts are shared through lockout.redis_url's Redis.
        "scan": {"enabled": True, "feeds": [FEED]},
    }


_CHOSEN: set[int] = set()


def _port() -> int:
    """A free port none of this module's servers was given: ``free_port`` releases its port,
    so two calls can return the same one, and HAProxy (and popproxy's workers) bind with
    SO_REUSEPORT, where two listeners on one port silently share its connections (the likely
    cause of one CI run in which logins sent to frontend ``a`` reached B)."""
    port = free_port(*_CHOSEN)
    _CHOSEN.add(port)
    return port


def _spawn(name: str, base: Path, pki: Path, secret: Path, redis_url: str) -> Instance:
    root = base / name
    (root / "policy").mkdir(parents=True)
    port, metrics_port = _port(), _port()
    # JSON is YAML: the policy directory holds one file, as /etc/popproxy would.
    (root / "policy" / "policy.yaml").write_text(
        json.dumps(_policy(root, port, metrics_port, pki, secret, redis_url), indent=2))
    feed = root / "policy" / FEED  # relative to the policy's directory (issue 19 item 5)
    feed.write_text(FEED_HOSTS)
    fetched = time.time() - (3600 if name == "b" else 0)  # B fetched its copy an hour earlier
    os.utime(feed, (fetched, fetched))
    with (root / "popproxy.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popproxy", "run", "--config", str(root / "policy")],
            cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    return Instance(name, port, metrics_port, root, proc)


# --------------------------------------------------------------------------- HAProxy
def haproxy_config(ports: dict[str, int], a: Instance, b: Instance) -> str:
    """Frontend ``lb`` balances over A and B, as in production (docs/scaling.md): HTTP health
    checks against each instance's ``/healthz`` on its metrics port (``check port``: no PROXY
    header, no connection to the POP3 listener, no audit noise); frontends ``a`` and ``b``
    reach one instance each."""
    return f"""\
# Generated by tests/integration/test_scale_out.py (loopback only)
global
    log stdout format raw local0
    maxconn 200
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend lb
    bind 127.0.0.1:{ports["lb"]}
    default_backend be_lb
frontend a
    bind 127.0.0.1:{ports["a"]}
    default_backend be_a
frontend b
    bind 127.0.0.1:{ports["b"]}
    default_backend be_b
backend be_lb
    balance roundrobin
    option redispatch
    retries 2
    option httpchk GET /healthz
    http-check expect status 200
    default-server send-proxy-v2 source {LB_SOURCE} check inter 200ms fall 1 rise 1
    server a 127.0.0.1:{a.port} check port {a.metrics_port}
    server b 127.0.0.1:{b.port} check port {b.metrics_port}
backend be_a
    server a 127.0.0.1:{a.port} send-proxy-v2 source {LB_SOURCE}
backend be_b
    server b 127.0.0.1:{b.port} send-proxy-v2 source {LB_SOURCE}
"""


@dataclass
class Balancer:
    ports: dict[str, int]  # frontend name -> 127.0.0.1 port
    root: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        try:
            return (self.root / "haproxy.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)


def _start_haproxy(a: Instance, b: Instance) -> Balancer:
    try:
        binary = haproxy_mod.find_binary()
    except haproxy_mod.HAProxyUnavailable as exc:
        haproxy_mod.unavailable(str(exc))
    root = Path(tempfile.mkdtemp(prefix="popproxy-scale-haproxy-"))
    ports = {name: _port() for name in ("lb", "a", "b")}
    config = root / "haproxy.cfg"
    config.write_text(haproxy_config(ports, a, b))
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True,
                           text=True, timeout=30, check=False)
    if check.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        haproxy_mod.unavailable(f"haproxy rejected its config:\n{check.stdout}{check.stderr}")
    with (root / "haproxy.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
    balancer = Balancer(ports, root, proc)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited with {proc.returncode}:\n{balancer.log_text()}")
        return all(_listening(port) for port in ports.values())

    _wait(up, "haproxy to listen", START_TIMEOUT, balancer.log_text)
    return balancer


# --------------------------------------------------------------------------- clients
class Pop3sFrom(poplib.POP3):
    """``poplib.POP3`` over implicit TLS from a chosen loopback source address."""

    def __init__(self, port: int, source: str, context: ssl.SSLContext) -> None:
        self.source = source
        self.tls_context = context
        super().__init__("127.0.0.1", port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.source, 0))
        return self.tls_context.wrap_socket(sock, server_hostname="localhost")


def _pass(client: poplib.POP3, password: str) -> bytes:
    """The PASS reply's status line, +OK or -ERR."""
    try:
        return client.pass_(password)
    except poplib.error_proto as exc:
        reply = exc.args[0]
        assert isinstance(reply, bytes)
        return reply


@dataclass
class Cluster:
    a: Instance
    b: Instance
    haproxy: Balancer
    redis: RedisServer
    tls: ssl.SSLContext  # trusts the instances' shared certificate

    def connect(self, frontend: str, source: str) -> Pop3sFrom:
        client = Pop3sFrom(self.haproxy.ports[frontend], source, self.tls)
        assert client.getwelcome().startswith(b"+OK")
        return client

    def attempt(self, frontend: str, source: str, password: str) -> bytes:
        """One USER/PASS login as demo on a fresh connection, then QUIT; the PASS reply."""
        client = self.connect(frontend, source)
        try:
            assert client.user("demo").startswith(b"+OK")
            reply = _pass(client, password)
            client.quit()
            return reply
        finally:
            client.close()

    def fetch_welcome(self, frontend: str, source: str) -> None:
        """The real user's whole session: login, RETR 1, QUIT."""
        client = self.connect(frontend, source)
        try:
            client.user("demo")
            assert client.pass_("demo").startswith(b"+OK")
            assert WELCOME in client.retr(1)[1]
            client.quit()
        finally:
            client.close()

    def list_and_retr(self, frontend: str, number: int) -> tuple[list[int], bytes, int]:
        """The real user's session: LIST, RETR ``number``, QUIT; sizes, message, its octets."""
        client = self.connect(frontend, USER_ADDR)
        try:
            client.user("demo")
            assert client.pass_("demo").startswith(b"+OK")
            sizes = [int(line.split()[1]) for line in client.list()[1]]
            _, lines, octets = client.retr(number)
            client.quit()
        finally:
            client.close()
        return sizes, b"".join(line + b"\r\n" for line in lines), octets

    def verdict_ttls(self) -> dict[bytes, int]:
        client = self.redis.client()
        try:
            return {k: int(client.ttl(k)) for k in client.scan_iter(match=b"popproxy:verdict:*")
                    if isinstance(k, bytes)}
        finally:
            client.close()

    def earn_lockout(self, frontend: str, source: str) -> None:

        assert [self.attempt(frontend, source, pw) for pw in WRONG] == [AUTH_FAILED] * 3

    def lockout_keys(self) -> list[bytes]:
        client = self.redis.client()
        try:
            return sorted(k for k in client.scan_iter(match=b"popproxy:{lockout}:*")
                          if isinstance(k, bytes))
        finally:
            client.close()


@pytest.fixture
def cluster(redis_srv: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    try:  # no HAProxy: fail (CI) or skip before spawning anything
        haproxy_mod.find_binary()
    except haproxy_mod.HAProxyUnavailable as exc:
        haproxy_mod.unavailable(str(exc))
    redis_srv.start()
    redis_srv.flush()
    ca = trustme.CA()
    pki = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pki))
    secret = tmp_path / "lockout.key"
    secret.write_bytes(os.urandom(32).hex().encode() + b"\n")  # shared by A and B
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    with ExitStack() as stack:
        instances = []
        for name in ("a", "b"):  # both start at once: ~2 s of imports each
            instance = _spawn(name, tmp_path, pki, secret, redis_srv.url)
            stack.callback(instance.stop)
            instances.append(instance)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Instance.wait_ready, instances))
        a, b = instances
        balancer = _start_haproxy(a, b)
        stack.callback(shutil.rmtree, balancer.root, True)
        stack.callback(balancer.stop)
        yield Cluster(a, b, balancer, redis_srv, tls)


# --------------------------------------------------------------------------- tests
def test_roundrobin_spreads_logins_and_both_see_the_real_client(cluster: Cluster) -> None:
    for _ in range(4):
        cluster.fetch_welcome("lb", USER_ADDR)
    # Two each: HAProxy alternated, and each process took the client address from the PROXY
    # header (the socket peer is HAProxy's 127.0.0.1).
    assert (cluster.a.logins(USER_ADDR, "ok"), cluster.b.logins(USER_ADDR, "ok")) == (2, 2)
    # Health checks went to /healthz: the POP3 listeners saw only the four client connections.
    connects = cluster.a.audit("connect") + cluster.b.audit("connect")
    assert [r["client"] for r in connects] == [USER_ADDR] * 4
    assert "be_lb/a is DOWN" not in cluster.haproxy.log_text()


def test_lockout_earned_at_a_holds_at_b_within_100_ms(cluster: Cluster) -> None:
    # B's session is open and past USER before the guessing starts, so only PASS is left.
    waiting_at_b = cluster.connect("b", GUESSER)
    try:
        assert waiting_at_b.user("demo").startswith(b"+OK")
        assert [cluster.attempt("a", GUESSER, pw) for pw in WRONG[:-1]] == [AUTH_FAILED] * 2
        third = cluster.connect("a", GUESSER)
        try:
            third.user("demo")
            assert _pass(third, WRONG[-1]) == AUTH_FAILED
            answered_at_a = time.monotonic()
            # The right password, at the other process, right after A's answer.
            assert _pass(waiting_at_b, "demo") == LOCKED
            locked_at_b = time.monotonic()
        finally:
            third.close()
    finally:
        waiting_at_b.close()
    assert locked_at_b - answered_at_a < 0.1, f"{locked_at_b - answered_at_a:.3f} s"
    assert cluster.b.audit("login", client=GUESSER, result="locked", scope="pair")
    assert cluster.b.logins(GUESSER, "bad_credentials") == 0  # B never saw a failure itself
    # Only the pair is blocked: the same account from the user's own address is fine, at both.
    for frontend in ("a", "b", "lb"):
        cluster.fetch_welcome(frontend, USER_ADDR)


def test_killing_an_instance_loses_no_lockout(cluster: Cluster) -> None:
    cluster.fetch_welcome("lb", USER_ADDR)
    cluster.earn_lockout("a", GUESSER)
    stored = cluster.lockout_keys()
    assert any(key.startswith(b"popproxy:{lockout}:p:") for key in stored)

    cluster.a.proc.send_signal(signal.SIGKILL)  # a crash: no shutdown, nothing flushed
    assert cluster.a.proc.wait(10) == -signal.SIGKILL
    assert cluster.attempt("b", GUESSER, "demo") == LOCKED
    assert cluster.lockout_keys() == stored

    # HAProxy's health check takes A out of the rotation; every balanced connection now lands
    # on B, which keeps blocking the guesser and serving the user.
    _wait(lambda: "be_lb/a is DOWN" in cluster.haproxy.log_text(), "HAProxy to mark A down",
          5.0, cluster.haproxy.log_text)
    assert [cluster.attempt("lb", GUESSER, "demo") for _ in range(2)] == [LOCKED] * 2
    before = cluster.b.logins(USER_ADDR, "ok")
    for _ in range(2):
        cluster.fetch_welcome("lb", USER_ADDR)
    assert cluster.b.logins(USER_ADDR, "ok") == before + 2
    assert cluster.b.logins(GUESSER, "locked") == 3
    assert cluster.b.proc.poll() is None


def test_a_verdict_judged_at_a_is_served_by_b_without_a_second_scan(cluster: Cluster) -> None:
    sizes, message, octets = cluster.list_and_retr("a", LINK_MESSAGE)
    judged = {r["message"]: r["action"] for r in cluster.a.audit("verdict")}
    assert judged == {1: "pass", 2: "pass", LINK_MESSAGE: "defang"}  # LIST judged them all
    assert message.startswith(b"X-Popproxy-Verdict: defang")
    assert b"https://www.example.test/" not in message
    assert octets == sizes[LINK_MESSAGE - 1]  # RFC 1939: LIST octets == RETR octets
    assert cluster.a.metric("popproxy_verdict_cache_total", result="miss") == 3
    ttls = cluster.verdict_ttls()
    # scan.evidence_ttl, 180 days by default
    assert len(ttls) == 3 and all(0 < ttl <= 180 * 86400 for ttl in ttls.values()), ttls

    # The client's next session lands on B: the same sizes and the same defanged bytes, from
    # A's verdicts in Redis; B's feed copy has another mtime but the same content, so the same
    # generation.
    assert cluster.list_and_retr("b", LINK_MESSAGE) == (sizes, message, octets)
    assert cluster.b.audit("verdict") == []
    assert cluster.b.metric("popproxy_messages_scanned_total") == 0
    assert cluster.b.metric("popproxy_verdict_cache_total", result="shared_hit") == 3
    assert cluster.b.metric("popproxy_verdict_cache_total", result="shared_error") == 0

    # And again through the balancer, wherever it lands: still nothing judged a second time.
    for _ in range(2):
        assert cluster.list_and_retr("lb", LINK_MESSAGE) == (sizes, message, octets)
    assert len(cluster.a.audit("verdict")) == 3 and cluster.b.audit("verdict") == []
