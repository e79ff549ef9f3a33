"""``popproxy test-login`` and ``popproxy explain`` against a real Dovecot and Redis (issue 19
item 8): the real upstream login through the route, no password in the output, and the lockout
state read from the store a running proxy shares."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popproxy.policy import load_config
from popproxy.policy.lockout import make_keys, password_tag
from popproxy.proxy.lockout_store import RedisStore
from popproxy.proxy.redis_client import connect_url
from tests.integration.dovecot import Dovecot
from tests.integration.redis_server import RedisServer

pytestmark = pytest.mark.dovecot
ROOT = Path(__file__).resolve().parents[2]


def _policy(tmp_path: Path, dovecot: Dovecot, redis_url: str = "") -> Path:
    lockout = f"lockout: {{redis_url: '{redis_url}', pair: {{free: 1, block_after: 2}}}}\n" if (
        redis_url) else ""
    path = tmp_path / "policy.yaml"
    path.write_text(
        "listeners:\n  - {name: pop3s, port: 1, mode: tls}\n"
        "  - {name: office, port: 2, mode: starttls, allow: [10.0.0.0/8]}\n"
        f"upstreams: {{dovecot: {{host: 127.0.0.1, port: {dovecot.port}}}}}\n"
        "routes: [{match: alice, upstream: dovecot}]\n"
        "upstream: {host: 127.0.0.1, port: 9}\n"
        f"state_dir: state\n{lockout}")
    return path


def _popproxy(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "popproxy", *args], input=stdin, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_test_login_logs_in_through_the_route_and_never_prints_the_password(
        tmp_path: Path, dovecot: Dovecot) -> None:
    policy = _policy(tmp_path, dovecot)
    password = dovecot.password("alice")
    good = _popproxy("test-login", "alice", "--config", str(policy), stdin=password + "\n")
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert lines[:2] == ["route: dovecot", f"upstream: 127.0.0.1:{dovecot.port} (plain)"]
    assert lines[2].startswith("result: logged in: +OK")
    bad = _popproxy("test-login", "alice", "-c", str(policy), "-l", "pop3s",
                    stdin="wrong-password\n")
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[-1].startswith("result: refused: -ERR [AUTH]")
    for result in (good, bad):
        assert password not in result.stdout + result.stderr
        assert "wrong-password" not in result.stdout + result.stderr


def test_explain_reads_the_lockout_state_from_redis(
        tmp_path: Path, dovecot: Dovecot, rds: RedisServer) -> None:
    policy_path = _policy(tmp_path, dovecot, rds.url)
    config = load_config(policy_path)
    secret = b"0123456789abcdef" * 4
    config.state_dir.mkdir()
    (config.state_dir / "lockout.key").write_bytes(secret)
    before = _popproxy("explain", "-c", str(policy_path), "--user", "alice", "--from",
                       "10.1.2.3", "--listener", "office")
    assert before.returncode == 0, before.stderr
    assert "route: dovecot\n" in before.stdout
    assert "lockout: not locked; failures in the last 3600 s: pair 0 (limit 2)" in (
        before.stdout)

    async def fail_twice() -> None:  # what a running proxy records for two wrong passwords
        store = RedisStore(connect_url(rds.url))
        keys = make_keys(secret, "alice", ipaddress.ip_address("10.1.2.3"), config.lockout)
        for guess in (b"one", b"two"):
            await store.record_failure(keys, password_tag(secret, "alice", guess),
                                       time.time(), config.lockout.window)
        await store.close()

    asyncio.run(fail_twice())
    after = _popproxy("explain", "-c", str(policy_path), "-u", "alice", "--from", "10.1.2.3",
                      "-l", "office")
    assert "lockout: BLOCKED (pair); failures in the last 3600 s: pair 2 (limit 2), " \
           "source 2 (limit 50), account 2 (limit 30)" in after.stdout
    elsewhere = _popproxy("explain", "-c", str(policy_path), "-u", "alice", "--from",
                          "192.0.2.1", "-l", "office")
    assert elsewhere.returncode == 1  # not in the office listener's allow list
    assert "connect: DENIED (source network not in listener allow list)" in elsewhere.stdout
    assert "lockout: not locked" in elsewhere.stdout  # another source: its own counters
