"""A real Prometheus scrapes a popproxy running a scripted workload; every dashboard query has data.

One module-wide scenario: an in-process DemoUpstream (clean mail plus a phishing message), a
ProxyServer with three listeners (implicit TLS, STLS, plain behind the PROXY protocol), lockouts
with small limits, scanning on, and the OpsServer serving /metrics from the same Observer.  A
Prometheus subprocess scrapes it every second.  The workload runs twice, with a scrape in
between, so every counter has two different samples and rate()/increase() have something to
say.  Then each target expr of grafana/popproxy.json runs through Prometheus' HTTP API and
must return a non-empty, non-NaN, non-zero result; the /metrics exposition must pass
``promtool check metrics``; the alert rules of grafana/alerts.yml must evaluate without error.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from popproxy.auditlog import AuditLog
from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES, DemoUpstream, Mailbox
from popproxy.proxy.health import UpstreamProbe
from popproxy.proxy.http import OpsServer
from popproxy.proxy.observe import Observer
from popproxy.proxy.server import ProxyServer
from popproxy.proxy.tasks import spawn
from tests.helpers import LoopThread, running_demo, running_proxy
from tests.integration import prom
from tests.integration.rawpop import RawPOP3, wait_for
from tests.support.ports import free_port

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"

PHISH = (
    b"From: PayPal Security <service@paypal.example>\r\nTo: reader@example.test\r\n"
    b"Subject: Urgent: verify your account\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><body><p>Your account is locked.</p>\r\n"
    b'<p><a href="http://198.51.100.7/login/verify">https://www.paypal.com/account</a></p>\r\n'
    b'<form action="http://198.51.100.7/collect" method="post">'
    b'<input name="password" type="password"></form>\r\n'
    b"</body></html>\r\n"
)
READER_PASSWORD = "reader-pw"
LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"


# ---------------------------------------------------------------------- setup
@dataclass
class Pki:
    ca_file: Path
    pem: Path

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def _pki(root: Path) -> Pki:
    ca = trustme.CA()
    pki = Pki(root / "ca.pem", root / "server.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(pki.pem))
    return pki


def _policy(upstream_port: int, dead_port: int, pki: Pki, state: Path,
            **changes: Any) -> Policy:
    data: dict[str, Any] = {
        "listeners": [
            {"name": "tls", "port": 1, "mode": "tls", "deny": ["127.0.0.2/32"]},
            {"name": "stls", "port": 2, "mode": "starttls"},
            {"name": "lb", "port": 3, "mode": "plain", "allow_plaintext_login": True,
             "proxy_protocol": {"trusted": ["127.0.0.1/32"], "header_timeout": 5}},
        ],
        "upstream": {"host": "127.0.0.1", "port": upstream_port, "connect_timeout": 5,
                     "greeting_timeout": 5, "response_timeout": 30},
        # ghost* users go to an upstream nobody listens on: upstream errors.
        "upstreams": {"down": {"host": "127.0.0.1", "port": dead_port, "connect_timeout": 2}},
        "routes": [{"match": "ghost*", "upstream": "down"}],
        # intruder may log in only from a network we never use: policy denials.
        "users": [{"match": "intruder", "allow": ["192.0.2.0/24"]}],
        "limits": {"auth_failure_delay": 0, "max_login_failures": 5, "shutdown_grace": 1},
        "tls": {"certificates": [{"cert": str(pki.pem), "key": str(pki.pem)}]},
        "state_dir": str(state),
        # Two wrong passwords per user and address, then blocked.  The lockout store is a Redis
        # nobody listens on, failing open: lockouts work on local counters, and every store
        # call is a counted store error (the "Lockout store errors" panel).
        "lockout": {"enabled": True, "pair": {"free": 1, "block_after": 2},
                    "source": {"free": 100, "block_after": 1000},
                    "account": {"free": 100, "block_after": 1000},
                    "base_delay": 0.01, "max_delay": 0.05,
                    "redis_url": f"redis://127.0.0.1:{dead_port}/0", "fail_mode": "open"},
        # A budget no listing fits in: the newest message is judged at STAT, the rest at RETR
        # (the listing-budget panels; LIST == RETR either way).
        "scan": {"enabled": True, "thresholds": {"tag": 2, "defang": 5, "quarantine": 12},
                 "listing_budget": 0.001},
    }
    data.update(changes)
    return Policy.model_validate(data)


def _dead_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    return free_port()


# ---------------------------------------------------------------------- clients
def _tls_client(port: int, pki: Pki) -> RawPOP3:
    client = RawPOP3(port, read_greeting=False)
    client.sock = pki.client().wrap_socket(client.sock, server_hostname="localhost")
    client.greeting = client.read_line()
    return client


def _starttls(client: RawPOP3, pki: Pki) -> None:
    assert client.command("STLS") == b"+OK begin TLS negotiation\r\n"
    client.sock = pki.client().wrap_socket(client.sock, server_hostname="localhost")


def _login(client: RawPOP3, user: str, password: str) -> bytes:
    assert client.command(f"USER {user}").startswith(b"+OK")
    return client.command(f"PASS {password}")


def _quit(client: RawPOP3) -> None:
    assert client.command("QUIT").startswith(b"+OK")
    client.read_until_eof()
    client.close()


@dataclass
class Workload:
    proxy: ProxyServer
    loop: LoopThread
    pki: Pki
    policy: Policy
    ports: dict[str, int]

    def run(self, phase: int) -> None:
        """Everything each panel counts; each phase uses fresh users (no cached verdicts)."""
        tls, stls, lb = self.ports["tls"], self.ports["stls"], self.ports["lb"]
        self._read_all_mail(tls, f"reader{phase}")
        self._stls_session(stls)
        self._until_locked(tls, f"victim{phase}")
        self._policy_denied(tls)
        self._upstream_down(tls, f"ghost{phase}")
        self._stls_injection(stls)
        self._proxy_header_garbage(lb)
        self._tls_garbage(tls)
        self._denied_address(tls)
        self._reloads(phase)

    def _read_all_mail(self, port: int, user: str) -> None:
        client = _tls_client(port, self.pki)
        assert _login(client, user, READER_PASSWORD).startswith(b"+OK")
        count = int(client.command("STAT").split()[1])
        assert count == len(SAMPLE_MESSAGES) + 1
        client.command("UIDL")
        bodies = [client.command(f"RETR {n}") for n in range(1, count + 1)]
        assert all(body.startswith(b"+OK") for body in bodies)
        assert b"198.51.100.7/login" not in bodies[-1], "the phishing message was delivered"
        _quit(client)

    def _stls_session(self, port: int) -> None:
        client = RawPOP3(port)
        assert client.command("USER demo").startswith(b"-ERR [SYS/PERM] TLS is required")
        assert b"STLS" in client.command("CAPA")
        _starttls(client, self.pki)
        assert _login(client, "demo", "demo").startswith(b"+OK")
        assert client.command("RETR 1").startswith(b"+OK")
        _quit(client)

    def _until_locked(self, port: int, user: str) -> None:
        client = _tls_client(port, self.pki)
        assert _login(client, user, "wrong-1") == AUTH_FAILED
        assert _login(client, user, "wrong-2") == AUTH_FAILED
        assert _login(client, user, "wrong-3") == LOCKED
        _quit(client)

    def _policy_denied(self, port: int) -> None:
        client = _tls_client(port, self.pki)
        assert _login(client, "intruder", "whatever") == AUTH_FAILED
        _quit(client)

    def _upstream_down(self, port: int, user: str) -> None:
        client = _tls_client(port, self.pki)
        assert _login(client, user, "whatever").startswith(b"-ERR [SYS/TEMP]")
        client.read_until_eof()
        client.close()

    def _stls_injection(self, port: int) -> None:
        with RawPOP3(port) as client:
            client.send(b"STLS\r\nCAPA\r\n")
            assert client.read_until_eof().startswith(b"-ERR [SYS/PERM] data after STLS")

    def _proxy_header_garbage(self, port: int) -> None:
        with RawPOP3(port, read_greeting=False) as client:
            client.send(b"HELLO this is not a PROXY header\r\n")
            assert client.read_until_eof() == b""

    def _tls_garbage(self, port: int) -> None:
        with RawPOP3(port, read_greeting=False) as client:
            client.send(b"USER plaintext-on-the-tls-port\r\n" * 4)
            client.read_until_eof()

    def _denied_address(self, port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), 10,
                                      source_address=("127.0.0.2", 0)) as sock:
            sock.settimeout(10)
            with suppress(ConnectionResetError):  # closed without a word
                assert sock.recv(100) == b""

    def _reloads(self, phase: int) -> None:
        tweaked = self.policy.model_copy(update={
            "limits": self.policy.limits.model_copy(update={"max_sessions": 500 + phase})})
        assert self._reload(tweaked)
        if phase > 1:  # a listener change is refused (sockets cannot change live)
            moved = self.policy.model_copy(update={"listeners": self.policy.listeners[:2]})
            assert not self._reload(moved)

    def _reload(self, new: Policy) -> bool:
        async def reload() -> bool:
            return self.proxy.reload_policy(new)

        return self.loop.call(reload())


# ---------------------------------------------------------------------- the scenario
@dataclass
class Scenario:
    prometheus: prom.Prometheus
    observer: Observer
    exposition: bytes
    # PopproxyPhishingDetected's expr, evaluated when only phase 1 (one quarantine) was scraped.
    phishing_alert_after_first_quarantine: dict[str, Any]
    readyz: int  # the HTTP status of /readyz at the end


def _local(observer: Observer, name: str) -> float:
    """Sum of a metric's samples in the proxy's own registry."""
    total = 0.0
    for metric in observer.metrics.registry.collect():
        total += sum(s.value for s in metric.samples if s.name == name)
    return total


def _sync_scrape(prometheus: prom.Prometheus, observer: Observer, held_open: int) -> None:
    """Wait until the workload is over and Prometheus has scraped its final numbers."""
    wait_for(lambda: _local(observer, "popproxy_active_sessions") == held_open, 10,
             "sessions to end")
    sessions = _local(observer, "popproxy_session_duration_seconds_count")
    prometheus.wait_until("sum(popproxy_session_duration_seconds_count)", sessions)


def _one_more_scrape(prometheus: prom.Prometheus) -> None:
    expr = 'count_over_time(up{job="popproxy"}[10m])'
    seen = prometheus.scalar(expr)
    assert seen is not None
    prometheus.wait_until(expr, seen + 1)


async def _start(probe: UpstreamProbe) -> asyncio.Task[None]:
    return spawn(probe.run(), "upstream-probe")


def _alert_expr(name: str) -> str:
    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return str(rule["expr"])
    raise AssertionError(f"no alert {name} in grafana/alerts.yml")


@pytest.fixture(scope="module")
def scenario(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Scenario]:
    prom.require("prometheus")
    root = tmp_path_factory.mktemp("prometheus-scenario")
    pki = _pki(root)
    users = {b"demo": Mailbox(b"demo")}
    for phase in (1, 2):
        users[f"reader{phase}".encode()] = Mailbox(READER_PASSWORD.encode(),
                                                   [*SAMPLE_MESSAGES, PHISH])
    demo = DemoUpstream(users)
    observer = Observer(audit=AuditLog(None))
    with ExitStack() as stack:
        stack.enter_context(running_demo(loop_thread, demo))
        policy = _policy(demo.port, _dead_port(), pki, root / "state")
        running = stack.enter_context(running_proxy(policy, loop_thread, observer))
        # As `popproxy serve` wires it: /readyz and popproxy_upstream_up from one probe of
        # the upstreams of the server's current policy, also in the background.
        probe = UpstreamProbe(running.server, observer.metrics)
        ops = OpsServer(observer.metrics.registry, probe.ready)
        loop_thread.call(ops.start("127.0.0.1", 0))
        stack.callback(lambda: loop_thread.call(ops.stop()))
        probing = loop_thread.call(_start(probe))
        stack.callback(lambda: loop_thread.loop.call_soon_threadsafe(probing.cancel))
        prometheus = stack.enter_context(prom.running(
            root / "prom", [f"127.0.0.1:{ops.port}"], [GRAFANA / "alerts.yml"]))
        prometheus.wait_until('up{job="popproxy"}', 1.0)

        # One session stays logged in throughout, so "Active sessions" is not just zeros.
        idle = _tls_client(running.server.ports["tls"], pki)
        stack.callback(idle.close)
        assert _login(idle, "demo", "demo").startswith(b"+OK")

        workload = Workload(running.server, loop_thread, pki, policy, running.server.ports)
        workload.run(1)
        _sync_scrape(prometheus, observer, held_open=1)
        _one_more_scrape(prometheus)
        first_phish = prometheus.query(_alert_expr("PopproxyPhishingDetected"))
        workload.run(2)
        _sync_scrape(prometheus, observer, held_open=1)
        status, exposition = prom.http_get(f"http://127.0.0.1:{ops.port}/metrics")
        assert status == 200
        readyz = prom.http_get(f"http://127.0.0.1:{ops.port}/readyz")[0]
        yield Scenario(prometheus, observer, exposition, first_phish, readyz)


# ---------------------------------------------------------------------- the tests
def _dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads((GRAFANA / "popproxy.json").read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                # Grafana's "All" for the instance variable (its allValue).
                found.append((panel.get("title", "?"),
                              target["expr"].replace("$instance", ".*")))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def _problem(answer: dict[str, Any]) -> str | None:
    """Why a query answer is not data a panel could show (None if it is)."""
    if answer.get("status") != "success":
        return f"error: {answer.get('errorType')}: {answer.get('error')}"
    data = answer["data"]
    if data["resultType"] != "vector":
        return f"result type {data['resultType']}"
    values = [float(sample["value"][1]) for sample in data["result"]]
    if not values:
        return "empty result"
    if not any(math.isfinite(v) and v != 0 for v in values):
        return f"only zero/NaN values: {values}"
    return None


def test_every_dashboard_query_returns_data(scenario: Scenario) -> None:
    targets = _dashboard_targets()
    assert len(targets) >= 19  # every panel of grafana/build_dashboard.py has one target
    failures = []
    for title, expr in targets:
        problem = _problem(scenario.prometheus.query(expr))
        if problem is not None:
            failures.append(f"{title}: {expr}\n    -> {problem}")
    assert not failures, "dashboard queries without data:\n" + "\n".join(failures)


def test_promtool_check_metrics_is_clean(scenario: Scenario) -> None:
    assert b"popproxy_logins_total" in scenario.exposition
    result = prom.check_metrics(scenario.exposition)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def test_every_declared_metric_is_scraped(scenario: Scenario) -> None:
    """The workload reaches every metric of popproxy/metrics.py (so the above means something)."""
    from popproxy.metrics import DEFINITIONS

    missing = []
    for definition in DEFINITIONS.values():
        name = definition.name + ("_count" if definition.kind.__name__ == "Histogram" else "")
        if scenario.prometheus.scalar(f"count({name})") is None:
            missing.append(definition.name)
    assert not missing, f"never scraped: {missing}"


def test_alert_rules_evaluate_against_live_metrics(scenario: Scenario) -> None:
    def rules() -> list[dict[str, Any]]:
        answer = scenario.prometheus.api("rules")
        assert answer["status"] == "success", answer
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]

    # No "for:" on these two and the workload did both: they fire at the next evaluation.
    expected = {"PopproxyStlsInjection", "PopproxyPhishingDetected"}
    deadline = time.monotonic() + 10
    while True:
        loaded = rules()
        firing = {r["name"] for r in loaded if r["state"] == "firing"}
        unknown = [r["name"] for r in loaded if r["health"] == "unknown"]
        if (expected <= firing and not unknown) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(loaded) == 11
    broken = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert not broken, broken
    assert expected <= firing, firing


def test_first_quarantine_fires_the_phishing_alert(scenario: Scenario) -> None:
    answer = scenario.phishing_alert_after_first_quarantine
    assert answer["status"] == "success", answer
    assert answer["data"]["result"], "PopproxyPhishingDetected stays silent after 1 quarantine"


def test_workload_counted_what_it_did(scenario: Scenario) -> None:
    """Sanity of the scenario itself, from the proxy's own registry."""
    registry = scenario.observer.metrics.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("popproxy_logins_total", result="locked") == 2
    assert value("popproxy_logins_total", result="policy_denied") == 2
    assert value("popproxy_lockout_blocks_total", scope="pair") == 2
    assert value("popproxy_stls_injection_attempts_total") == 2
    assert value("popproxy_proxy_protocol_rejects_total", reason="malformed") == 2
    assert value("popproxy_upstream_errors_total", upstream="down", reason="connect") == 2
    assert value("popproxy_messages_scanned_total", verdict="flagged", action="quarantine") == 2
    assert value("popproxy_config_reloads_total", kind="policy", result="ok") == 2
    assert value("popproxy_config_reloads_total", kind="policy", result="refused") == 1
    assert value("popproxy_tls_handshake_failures_total", listener="tls", reason="other") == 2
    assert value("popproxy_connections_total", listener="tls", result="denied") == 2
    assert value("popproxy_tls_handshakes_total", kind="implicit", version="none",
                 result="failed") == 2
    assert value("popproxy_login_before_tls_refused_total", command="USER") == 2


def test_dashboard_references_only_metrics_popproxy_exports(scenario: Scenario) -> None:
    """Each metric name in a panel query is in the live /metrics (``up`` is Prometheus')."""
    exported = set(re.findall(r"^([a-z_]+)[{ ]", scenario.exposition.decode(), re.MULTILINE))
    used = {name for _, expr in _dashboard_targets()
            for name in re.findall(r"\b((?:popproxy|process)_\w+)", expr)}
    assert len(used) > 30
    assert not used - exported, sorted(used - exported)


def test_upstream_up_and_readyz_follow_the_probe(scenario: Scenario) -> None:
    """The background probe set the gauge without any request to /readyz; the "down" upstream
    (nobody listens) makes the proxy not ready."""
    prometheus = scenario.prometheus
    assert prometheus.scalar('popproxy_upstream_up{upstream="default"}') == 1.0
    assert prometheus.scalar('popproxy_upstream_up{upstream="down"}') == 0.0
    assert prometheus.scalar("count(popproxy_build_info)") == 1.0
    expiry = prometheus.scalar('popproxy_tls_certificate_expiry_timestamp_seconds{name="server"}')
    assert expiry is not None and expiry > time.time() + 300 * 86400  # trustme: ~10 years
    assert (prometheus.scalar("process_resident_memory_bytes") or 0) > 0
    assert scenario.readyz == 503
    assert prometheus.scalar('count({__name__=~".+_created"})') is None
