"""``popproxy warm`` against a real Dovecot (issue 17 item 4): a mailbox warmed through the
master-user login is listed at its owner's first STAT without one message read to judge it,
LIST equals RETR, a rerun resumes (skips what is done), and nothing is ever deleted."""

from __future__ import annotations

import io
import poplib
import subprocess
from pathlib import Path

import pytest

from popproxy.metrics import Metrics
from popproxy.policy import load_config
from popproxy.proxy.observe import Observer
from popproxy.warm_cli import main_warm
from tests.helpers import LoopThread, running_proxy
from tests.integration.dovecot import MASTER_PASSWORD, MASTER_USER, Dovecot
from tests.integration.redis_server import RedisServer
from tests.support.tools import require_tool

pytestmark = pytest.mark.dovecot


def _policy(tmp_path: Path, dovecot: Dovecot, redis_url: str | None = None) -> Path:
    secret = tmp_path / "master.secret"
    secret.write_text(MASTER_PASSWORD + "\n")
    secret.chmod(0o600)
    feed = tmp_path / "feed.txt"
    feed.write_text("phish-a.example\n")
    redis = f"\n  redis_url: {redis_url}" if redis_url else ""
    path = tmp_path / "policy.yaml"
    path.write_text(f"""\
listeners:
  - {{name: pop3, host: 127.0.0.1, port: 1, mode: plain, allow_plaintext_login: true}}
upstream:
  host: 127.0.0.1
  port: {dovecot.port}
  warm_login: {{master_user: {MASTER_USER}, password_file: {secret}}}
limits: {{auth_failure_delay: 0}}
lockout: {{enabled: false}}
state_dir: {tmp_path / "state"}
scan:
  enabled: true
  feeds: [{feed}]{redis}
""")
    return path


def _judged(observer: Observer) -> tuple[float, float]:
    """(messages downloaded to judge, octets read to judge) by the proxy."""
    registry = observer.metrics.registry
    downloaded = registry.get_sample_value("popproxy_scan_judged_total", {"how": "downloaded"})
    octets = registry.get_sample_value("popproxy_scan_judge_bytes_total")
    return downloaded or 0.0, octets or 0.0


def _first_session_reads_nothing(port: int, observer: Observer) -> None:
    client = poplib.POP3("127.0.0.1", port, timeout=30)
    client.user("scan")
    client.pass_("scanpw")
    count, total = client.stat()
    assert count == 5  # warm deleted nothing
    assert _judged(observer) == (0.0, 0.0)  # every verdict came from the warmed cache
    _, lines, _ = client.list()
    sizes = {int(n): int(size) for n, size in (line.split() for line in lines)}
    assert sum(sizes.values()) == total
    for number in range(1, 5):  # 5: Dovecot's own off-by-CRLF (test_scan_consistency)
        assert client.retr(number)[2] == sizes[number], number
    client.quit()


def test_a_warmed_mailbox_is_listed_without_reading_a_message(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    path = _policy(tmp_path, dovecot)
    out = io.StringIO()
    # No Redis: the verdict file, filled while no proxy runs (--offline).
    assert main_warm(["--config", str(path), "--user", "scan", "--offline", "--rate", "0"],
                     out) == 0
    assert "5 messages judged (5 downloaded)" in out.getvalue()
    observer = Observer(Metrics())
    with running_proxy(load_config(path), loop_thread, observer) as proxy:
        _first_session_reads_nothing(proxy.port, observer)


def test_curl_lists_and_retrieves_a_warmed_mailbox_without_reading_a_message(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path) -> None:
    require_tool("curl")
    path = _policy(tmp_path, dovecot)
    assert main_warm(["--config", str(path), "--user", "scan", "--offline", "--rate", "0"],
                     io.StringIO()) == 0
    observer = Observer(Metrics())
    with running_proxy(load_config(path), loop_thread, observer) as proxy:
        url = f"pop3://127.0.0.1:{proxy.port}/"
        curl = ["curl", "-s", "--max-time", "60", "-u", "scan:scanpw"]
        listing = subprocess.run([*curl, url], capture_output=True, timeout=90,
                                 check=True).stdout.decode().splitlines()
        assert len(listing) == 5 and _judged(observer) == (0.0, 0.0)
        for line in listing[:4]:  # 5: Dovecot's own off-by-CRLF (test_scan_consistency)
            number, size = line.split()
            body = subprocess.run([*curl, url + number], capture_output=True, timeout=90,
                                  check=True).stdout
            assert len(body) == int(size), line
        assert _judged(observer) == (0.0, 0.0)


def test_warm_fills_redis_for_a_proxy_that_is_already_running(
        dovecot: Dovecot, loop_thread: LoopThread, tmp_path: Path, rds: RedisServer) -> None:
    path = _policy(tmp_path, dovecot, rds.url)
    observer = Observer(Metrics())
    with running_proxy(load_config(path), loop_thread, observer) as proxy:
        out = io.StringIO()
        assert main_warm(["--config", str(path), "--user", "scan", "--rate", "0"], out) == 0
        _first_session_reads_nothing(proxy.port, observer)


def test_a_rerun_skips_finished_mailboxes_and_fresh_downloads_nothing_cached(
        dovecot: Dovecot, tmp_path: Path) -> None:
    path = _policy(tmp_path, dovecot)
    args = ["--config", str(path), "--offline", "--rate", "0", "--user", "scan", "--user", "bob"]
    first = io.StringIO()
    assert main_warm(args, first) == 0
    assert "mailbox 2/2: " in first.getvalue()
    rerun = io.StringIO()
    assert main_warm(args, rerun) == 0
    assert rerun.getvalue().count("done in an earlier run, skipped") == 2
    assert "0 messages downloaded" in rerun.getvalue()
    fresh = io.StringIO()
    assert main_warm([*args, "--fresh"], fresh) == 0
    # Logged in and listed again, but every message was cached already.
    assert "5 messages judged (0 downloaded)" in fresh.getvalue()
    assert "0 messages downloaded, 0 octets read" in fresh.getvalue()


def test_a_wrong_master_password_fails_that_mailbox_only(
        dovecot: Dovecot, tmp_path: Path) -> None:
    path = _policy(tmp_path, dovecot)
    (tmp_path / "master.secret").write_text("not-the-password\n")
    out = io.StringIO()
    assert main_warm(["--config", str(path), "--offline", "--user", "scan"], out) == 1
    assert "refused the master login" in out.getvalue()
    assert "not-the-password" not in out.getvalue()
