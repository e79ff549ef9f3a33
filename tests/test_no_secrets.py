"""Known passwords go through a real `popproxy run`; no log, audit line or metric shows them.

The proxy runs as a subprocess at log level DEBUG (stdout and stderr to a file), with an audit
log file and the /metrics endpoint, in front of an in-process DemoUpstream whose users have
distinctive passwords.  The workload logs in every way a password can travel (USER/PASS,
AUTH PLAIN with an initial response, AUTH LOGIN, a password with spaces), gets passwords wrong
until locked out, sends one after the lockout, one before TLS, one on an over-long line, one
in a malformed PLAIN blob and one for a user routed to a dead upstream.  Then every file the
proxy wrote (log, audit log, state directory), the /metrics output and, in the Redis variant,
everything in Redis are searched for each password, its base64 and hex forms and the exact
SASL blobs sent: zero hits.  The audit log must hold the login events, so the search cannot
pass on empty files.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from tests.helpers import LoopThread, running_demo
from tests.integration.rawpop import RawPOP3
from tests.support.ports import free_port

ALICE = "Alice-Secret-7QxZ"  # USER/PASS, AUTH PLAIN, AUTH LOGIN: all succeed
BOB = "Kiwi7Tx Spaced9Qv Mango3Lr"  # a password with spaces (PASS takes the rest of the line)
WRONG = "Wrong-Guess-3VtP"  # alice, bad credentials
CAROL_GUESSES = ("Carol-Guess-1AaW", "Carol-Guess-2BbX")  # carol, until locked
AFTER_LOCK = "Carol-Guess-3CcY"  # answered by the lockout, never checked upstream
BEFORE_TLS = "Cleartext-Leak-8HjQ"  # PASS before STLS: refused
OVERLONG = "Overlong-Secret-6RtU"  # on a PASS line over 255 octets
MISMATCH = "Mismatch-Secret-4WsK"  # AUTH PLAIN with an authzid that is not the user
GHOST = "Ghost-Secret-5MnD"  # user routed to an upstream nobody listens on

PASSWORDS = (ALICE, BOB, WRONG, *CAROL_GUESSES, AFTER_LOCK, BEFORE_TLS, OVERLONG, MISMATCH,
             GHOST)
LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def _plain_blob(user: str, password: str, authzid: str = "") -> str:
    return _b64(f"{authzid}\0{user}\0{password}")


def forms(password: str) -> set[str]:
    """Every way a careless log line could show ``password``."""
    raw = password.encode()
    found = {password, _b64(raw), _b64(raw).rstrip("="), raw.hex(), raw.hex().upper(),
             password.replace(" ", "\\x20"), password.replace(" ", "%20"),
             password.replace(" ", "+")}
    found |= {word for word in password.split(" ") if len(word) >= 6}
    return found


# ---------------------------------------------------------------------- the proxy process
@dataclass
class Proxy:
    root: Path
    tls_port: int
    stls_port: int
    metrics_port: int

    @property
    def log(self) -> Path:
        return self.root / "popproxy.log"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    def audit_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def _policy(root: Path, upstream_port: int, redis_url: str | None) -> Proxy:
    proxy = Proxy(root, free_port(), free_port(), free_port())
    lockout: dict[str, Any] = {"enabled": True, "pair": {"free": 1, "block_after": 2},
                               "base_delay": 0.01, "max_delay": 0.05}
    if redis_url is not None:
        lockout["redis_url"] = redis_url
    policy = {
        "listeners": [{"name": "tls", "port": proxy.tls_port, "mode": "tls"},
                      {"name": "stls", "port": proxy.stls_port, "mode": "starttls"}],
        "upstream": {"host": "127.0.0.1", "port": upstream_port},
        "upstreams": {"down": {"host": "127.0.0.1", "port": free_port(),
                               "connect_timeout": 2}},
        "routes": [{"match": "ghost", "upstream": "down"}],
        "limits": {"auth_failure_delay": 0, "max_login_failures": 10, "shutdown_grace": 2},
        "state_dir": str(root / "state"),
        "lockout": lockout,
        "observability": {"metrics_port": proxy.metrics_port, "audit_log": str(proxy.audit)},
    }
    (root / "policy.yaml").write_text(json.dumps(policy, indent=2) + "\n")  # JSON is YAML
    return proxy


@contextmanager
def _popproxy(proxy: Proxy) -> Iterator[None]:
    with proxy.log.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "popproxy", "run", "--config", str(proxy.root / "policy.yaml"),
             "--log-level", "DEBUG"],
            cwd=proxy.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 20
        while b"popproxy ready" not in proxy.log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"popproxy did not start:\n{proxy.log.read_text()}")
            time.sleep(0.05)
        yield
        proc.send_signal(signal.SIGTERM)  # a clean stop: every log line is flushed
        assert proc.wait(15) == 0, proxy.log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------- the workload
def _tls(port: int) -> RawPOP3:
    # The proxy's own self-signed certificate; what is checked here is what gets logged.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = RawPOP3(port, read_greeting=False)
    client.sock = ctx.wrap_socket(client.sock)
    client.greeting = client.read_line()
    return client


def _user_pass(client: RawPOP3, user: str, password: str) -> bytes:
    assert client.command(f"USER {user}").startswith(b"+OK")
    return client.command(f"PASS {password}")


def _quit(client: RawPOP3) -> None:
    assert client.command("QUIT").startswith(b"+OK")
    client.read_until_eof()
    client.close()


def _workload(proxy: Proxy) -> None:
    port = proxy.tls_port

    client = _tls(port)  # USER/PASS, wrong then right
    assert _user_pass(client, "alice", WRONG) == AUTH_FAILED
    assert _user_pass(client, "alice", ALICE).startswith(b"+OK")
    assert client.command("RETR 1").startswith(b"+OK")
    _quit(client)

    client = _tls(port)  # AUTH PLAIN with an initial response (RFC 5034)
    assert client.command(f"AUTH PLAIN {_plain_blob('alice', ALICE)}").startswith(b"+OK")
    _quit(client)

    client = _tls(port)  # AUTH LOGIN: username and password as separate base64 lines
    assert client.command("AUTH LOGIN").startswith(b"+ ")
    assert client.command(_b64("alice")).startswith(b"+ ")
    assert client.command(_b64(ALICE)).startswith(b"+OK")
    _quit(client)

    client = _tls(port)  # a password with spaces, by USER/PASS and by AUTH PLAIN
    assert _user_pass(client, "bob", BOB).startswith(b"+OK")
    _quit(client)
    client = _tls(port)
    assert client.command(f"AUTH PLAIN {_plain_blob('bob', BOB)}").startswith(b"+OK")
    _quit(client)

    client = _tls(port)  # wrong passwords until locked, then one more
    assert [_user_pass(client, "carol", pw) for pw in CAROL_GUESSES] == [AUTH_FAILED] * 2
    assert _user_pass(client, "carol", AFTER_LOCK) == LOCKED
    _quit(client)

    client = _tls(port)  # a malformed PLAIN blob (authzid is someone else)
    assert client.command(f"AUTH PLAIN {_plain_blob('alice', MISMATCH, 'root')}") == (
        b"-ERR [AUTH] malformed credentials\r\n")
    long_line = f"PASS {OVERLONG} " + "x" * 300
    assert client.command("USER alice").startswith(b"+OK")
    assert client.command(long_line).startswith(b"-ERR")
    _quit(client)

    client = _tls(port)  # a user routed to a dead upstream
    assert _user_pass(client, "ghost", GHOST).startswith(b"-ERR [SYS/TEMP]")
    client.read_until_eof()
    client.close()

    with RawPOP3(proxy.stls_port) as plain:  # a password in clear before STLS
        assert plain.command("USER alice").startswith(b"-ERR [SYS/PERM] TLS is required")
        assert plain.command(f"PASS {BEFORE_TLS}").startswith(b"-ERR [SYS/PERM]")
        assert plain.command("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------------- the search
def _haystacks(proxy: Proxy, extra: dict[str, bytes]) -> dict[str, bytes]:
    """Every file under the test's directory (logs, audit log, state) plus ``extra``."""
    found = {str(path.relative_to(proxy.root)): path.read_bytes()
             for path in sorted(proxy.root.rglob("*")) if path.is_file()}
    found.pop("policy.yaml")  # written by this test, holds no password anyway
    return {**found, **extra}


def _needles() -> set[str]:
    needles = set().union(*(forms(pw) for pw in PASSWORDS))
    needles |= {_plain_blob("alice", ALICE), _plain_blob("bob", BOB),
                _plain_blob("alice", MISMATCH, "root")}
    return needles


def _redis_dump(url: str) -> bytes:
    """Every key, sorted-set member and string value in Redis, one per line."""
    import redis

    def raw(value: object) -> bytes:
        assert isinstance(value, bytes), value  # the client does not decode
        return value

    client = redis.Redis.from_url(url, decode_responses=False)
    out = bytearray()
    try:
        for key in client.scan_iter():
            out += raw(key) + b"\n"
            kind = raw(client.type(key))
            if kind == b"zset":
                for member in client.zrange(key, 0, -1):
                    out += raw(member) + b"\n"
            elif kind == b"string":
                out += raw(client.get(key)) + b"\n"
            else:
                raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")
    finally:
        client.close()
    return bytes(out)


@pytest.fixture(params=["memory", "redis"])
def lockout_store(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The lockout counters: in the proxy's memory, or in a real throw-away Redis."""
    if request.param == "memory":
        yield None
        return
    from tests.integration import redis_server

    try:
        server = redis_server.start()
    except redis_server.RedisUnavailable as exc:
        if redis_server.in_ci():
            pytest.fail(f"Redis variant cannot run: {exc}", pytrace=False)
        pytest.skip(f"Redis variant skipped: {exc}")
    try:
        yield server.url
    finally:
        redis_server.cleanup(server)


def test_no_password_in_logs_audit_metrics_or_state(
    loop_thread: LoopThread, tmp_path: Path, lockout_store: str | None
) -> None:
    users = {b"alice": Mailbox(ALICE.encode()), b"bob": Mailbox(BOB.encode()),
             b"carol": Mailbox(b"Carol-Real-Password-0Zz")}
    with running_demo(loop_thread, DemoUpstream(users)) as demo:
        proxy = _policy(tmp_path, demo.port, lockout_store)
        with _popproxy(proxy):
            _workload(proxy)
            metrics_url = f"http://127.0.0.1:{proxy.metrics_port}/metrics"
            metrics = urllib.request.urlopen(metrics_url, timeout=10).read()
            redis_dump = _redis_dump(lockout_store) if lockout_store else b""

    # Not vacuous: the files hold what the workload did.
    logins = [(e["user"], e["result"], e["mechanism"])
              for e in proxy.audit_events() if e["event"] == "login"]
    for expected in [("alice", "bad_credentials", "USER"), ("alice", "ok", "USER"),
                     ("alice", "ok", "PLAIN"), ("alice", "ok", "LOGIN"), ("bob", "ok", "USER"),
                     ("bob", "ok", "PLAIN"), ("carol", "bad_credentials", "USER"),
                     ("carol", "locked", "USER"), ("ghost", "upstream_error", "USER")]:
        assert expected in logins, (expected, logins)
    events = {e["event"] for e in proxy.audit_events()}
    assert {"connect", "tls", "login", "lockout", "login_before_tls"} <= events, events
    log = proxy.log.read_text()
    assert " DEBUG " in log and "login ok" in log
    assert b'popproxy_logins_total{result="ok"} 5.0' in metrics
    if lockout_store:
        assert redis_dump.count(b"popproxy:{lockout}:") >= 3, redis_dump  # counters were stored
        # Redis was really used: its error counters exist (at 0 from the start) but stay at 0.
        errors = [line for line in metrics.splitlines()
                  if line.startswith(b"popproxy_redis_errors_total{")]
        assert errors and all(line.endswith(b" 0.0") for line in errors), errors

    haystacks = _haystacks(proxy, {"/metrics": metrics, "redis": redis_dump})
    assert {"popproxy.log", "audit.jsonl"} <= set(haystacks)
    hits = _hits(haystacks)
    assert not hits, "secrets exposed:\n" + "\n".join(hits)


def _hits(haystacks: dict[str, bytes]) -> list[str]:
    return [f"{needle!r} in {name}" for name, data in haystacks.items()
            for needle in sorted(_needles()) if needle.encode() in data]


def test_the_search_finds_planted_secrets() -> None:
    """The search itself works: each careless rendering of a password is caught."""
    planted = {
        "plain": f"PASS {GHOST}".encode(),
        "repr": repr(BOB.encode()).encode(),
        "one word": b"password starts Kiwi7Tx ...",
        "base64": f"sasl={_b64(ALICE)}".encode(),
        "hex": ALICE.encode().hex().encode(),
        "blob": f"AUTH PLAIN {_plain_blob('alice', MISMATCH, 'root')}".encode(),
        "clean": b"login ok user=alice mechanism=PLAIN",
    }
    assert sorted({hit.rsplit(" in ", 1)[1] for hit in _hits(planted)}) == sorted(
        set(planted) - {"clean"})
