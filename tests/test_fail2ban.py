"""The fail2ban hand-off: docs/fail2ban/ checked with the real fail2ban (Debian ``fail2ban``).

An audit log written by a real proxy run (wrong passwords, lockout blocks, a policy denial,
successful logins) goes through ``fail2ban-regex`` with the shipped filter: exactly the failed
logins match, with the client address and the ``ts`` time.  The example jail is loaded by
``fail2ban-client -t`` and, with a dummy action, by a real ``fail2ban-server`` that bans.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from popproxy.auditlog import AuditLog
from popproxy.proxy.demo_upstream import DemoUpstream, Mailbox
from popproxy.proxy.observe import Observer
from tests.helpers import LoopThread, make_config, running_demo, running_proxy
from tests.integration.rawpop import RawPOP3, wait_for
from tests.support.tools import require_tool

DOCS = Path(__file__).resolve().parent.parent / "docs" / "fail2ban"
FILTER = DOCS / "popproxy.conf"
JAIL_EXAMPLE = DOCS / "jail.local.example"
FAILURES = ("bad_credentials", "locked", "policy_denied")
LOCKED = b"-ERR [SYS/TEMP] too many failed logins, try again later\r\n"
AUTH_FAILED = b"-ERR [AUTH] authentication failed\r\n"
ALICE_PASSWORD = "Alice-Pass-Word"


def _tool(name: str) -> str:
    return require_tool(name, "Debian package fail2ban")


@pytest.fixture(scope="module")
def fail2ban_regex() -> str:
    return _tool("fail2ban-regex")


def _run(*args: str, timeout: float = 20) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _is_failure(record: dict[str, Any]) -> bool:
    return record["event"] == "login" and record.get("result") in FAILURES


class RegexRun:
    """What ``fail2ban-regex`` made of a log with the shipped filter."""

    def __init__(self, tool: str, log: Path) -> None:
        out = _run(tool, "--print-all-matched", "--print-no-missed", str(log), str(FILTER))
        summary = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed",
                            out, re.MULTILINE)
        assert summary, out
        self.lines, self.ignored, self.matched, self.missed = map(int, summary.groups())
        section = out.split("|- Matched line(s):", 1)[1] if self.matched else ""
        self.matched_lines = [line.removeprefix("|  ") for line in section.splitlines()
                              if line.startswith("|  {")]
        # One row per failure: [address, time, {...}].
        rows = _run(tool, "-o", "row", str(log), str(FILTER))
        self.rows = [re.match(r"\['([^']+)',\s+([0-9.]+),", row) for row in rows.splitlines()]
        assert all(self.rows), rows

    def hosts_and_times(self) -> list[tuple[str, float]]:
        return [(m.group(1), float(m.group(2))) for m in self.rows if m is not None]


# --------------------------------------------------------------------------- a real proxy run
@pytest.fixture
def audit_log(loop_thread: LoopThread, tmp_path: Path) -> Path:
    """The audit log of a proxy run with failed and successful logins."""
    log = tmp_path / "audit.log"
    users = {b"demo": Mailbox(b"demo"), b"alice": Mailbox(ALICE_PASSWORD.encode())}
    with log.open("a", encoding="utf-8") as sink, \
            running_demo(loop_thread, DemoUpstream(users=users)) as demo:
        config = make_config(
            demo.port, state_dir=str(tmp_path / "state"),
            lockout={"enabled": True, "window": 60, "pair": {"free": 1, "block_after": 3},
                     "base_delay": 0.01, "max_delay": 0.05},
            users=[{"match": "bob", "allow": ["192.0.2.0/24"]}],  # bob: not from here
            limits={"max_login_failures": 10},
        )
        with running_proxy(config, loop_thread, Observer(audit=AuditLog(sink))) as proxy:
            with RawPOP3(proxy.port) as c:
                c.login("demo", "demo")
            with RawPOP3(proxy.port) as c:
                for n in range(3):
                    assert c.command("USER alice").startswith(b"+OK")
                    assert c.command(f"PASS Wrong-Guess-{n}") == AUTH_FAILED
                for _ in range(2):  # blocked, even with the right password
                    assert c.command("USER alice").startswith(b"+OK")
                    assert c.command(f"PASS {ALICE_PASSWORD}") == LOCKED
                assert c.command("USER bob").startswith(b"+OK")
                assert c.command("PASS Bob-Pass-Word") == AUTH_FAILED  # policy_denied
                c.login("demo", "demo")
            wait_for(lambda: proxy.server.session_count == 0, what="the sessions to end")
    return log


def test_filter_matches_exactly_the_failed_logins(fail2ban_regex: str, audit_log: Path) -> None:
    records = _records(audit_log)
    failures = [r for r in records if _is_failure(r)]
    assert [r["result"] for r in failures] == ["bad_credentials"] * 3 + ["locked"] * 2 + [
        "policy_denied"]
    # The log also holds what must not match: connects, successful logins, lockout events.
    kinds = {(r["event"], r.get("result") or r.get("action")) for r in records}
    assert {("connect", "accepted"), ("login", "ok"), ("lockout", "delay"),
            ("lockout", "block")} <= kinds

    run = RegexRun(fail2ban_regex, audit_log)
    assert (run.lines, run.ignored, run.matched) == (len(records), 0, 6)
    assert [json.loads(line) for line in run.matched_lines] == failures
    # Times come from "ts" (whole seconds when it was written with fewer than 3 decimals).
    assert [(h, int(t)) for h, t in run.hosts_and_times()] == [
        ("127.0.0.1", int(r["ts"])) for r in failures]


def test_filter_on_edge_cases_written_by_the_audit_log(fail2ban_regex: str,
                                                       tmp_path: Path) -> None:
    """Lines a real run rarely shows: IPv6, no user, hostile user names, short ``ts``."""
    log = tmp_path / "audit.log"
    now = time.time() // 10 * 10  # whole seconds: every decimal shape below is exact
    with log.open("w", encoding="utf-8") as sink:
        clock_value = [now]
        audit = AuditLog(sink, clock=lambda: clock_value[0])

        def login(ts: float, client: str, user: str | None, result: str) -> None:
            clock_value[0] = ts
            audit.event("login", "0123456789ab", client=client, user=user, result=result,
                        mechanism="USER")

        login(now + 0.123, "2001:db8::7", "alice", "bad_credentials")
        login(now + 0.1, "192.0.2.1", None, "locked")  # "ts": ....100
        login(now + 0.0, "192.0.2.2", "bob", "policy_denied")  # "ts": ....000
        login(now + 0.12, "192.0.2.3", 'x"\\ \u00e9\u4e2d', "bad_credentials")
        # A user name imitating a failure, on a successful login: no match.
        login(now + 1, "192.0.2.4", 'x", "result": "locked', "ok")
        # Results that are not guessing: no match.
        for result in ("ok", "malformed", "upstream_refused", "upstream_error",
                       "store_unavailable"):
            login(now + 2, "192.0.2.5", "carol", result)
        # Other events: no match.
        audit.event("lockout", "0123456789ab", client="192.0.2.6", user="dave",
                    action="block", scope="pair")
        audit.event("lockout_store_error", None, operation="counts", error="ConnectionError",
                    fail_mode="open")
        audit.event("connect", "0123456789ab", listener="pop3", client="192.0.2.7",
                    result="over_capacity")

    run = RegexRun(fail2ban_regex, log)
    assert (run.lines, run.matched) == (13, 4)
    # ts is always written with three decimals, so fail2ban reads every fraction.
    times = run.hosts_and_times()
    assert [host for host, _ in times] == ["2001:db8::7", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert [round(t - now, 3) for _, t in times[:3]] == [0.123, 0.1, 0.0]


# --------------------------------------------------------------------------- the example jail
def _fail2ban_config(tmp_path: Path, log: Path, extra: str = "") -> Path:
    """/etc/fail2ban with only our filter and jail (the example, logpath pointed at ``log``)."""
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for local in conf.glob("jail.d/*"):  # Debian enables sshd there
        local.unlink()
    shutil.copy(FILTER, conf / "filter.d" / "popproxy.conf")
    jail = JAIL_EXAMPLE.read_text()
    jail, n = re.subn(r"(?m)^logpath\s*=.*$", f"logpath  = {log}", jail)
    assert n == 1
    (conf / "jail.d" / "popproxy.local").write_text(jail)
    if extra:  # read after popproxy.local, so these settings win
        (conf / "jail.d" / "zz-test.local").write_text(f"[popproxy]\n{extra}")
    return conf


def test_example_jail_loads(fail2ban_regex: str, tmp_path: Path, audit_log: Path) -> None:
    client = _tool("fail2ban-client")
    if not Path("/etc/fail2ban/jail.conf").exists():
        pytest.skip("no /etc/fail2ban to build a test configuration from")
    conf = _fail2ban_config(tmp_path, audit_log)
    _run(client, "-c", str(conf), "-t")
    dump = _run(client, "-c", str(conf), "-d")
    assert "['add', 'popproxy', 'polling']" in dump
    assert f"['set', 'popproxy', 'addlogpath', '{audit_log}', 'head']" in dump
    assert "['set', 'popproxy', 'datepattern', '^\\\\{\"ts\": {EPOCH}(?:\\\\.\\\\d+)?']" in dump
    assert "['set', 'popproxy', 'maxretry', 20]" in dump
    assert "'addfailregex', '^, \"event\": \"login\"" in dump
    jails = re.findall(r"\['add', '([^']+)'", dump)
    assert jails == ["popproxy"]


def test_fail2ban_server_bans_the_guessing_address(fail2ban_regex: str, tmp_path: Path,
                                                   audit_log: Path) -> None:
    server = _tool("fail2ban-server")
    client = _tool("fail2ban-client")
    if not Path("/etc/fail2ban/jail.conf").exists():
        pytest.skip("no /etc/fail2ban to build a test configuration from")
    bans = tmp_path / "bans"
    # Test-only overrides: the dummy action (writes "+<ip>" to a file, no firewall), our
    # failures from 127.0.0.1 are not ignored, and six of them are enough.
    conf = _fail2ban_config(tmp_path, audit_log, extra=(
        f"action = dummy[target={bans}]\nignoreself = false\nignoreip =\nmaxretry = 6\n"))
    run = tmp_path / "run"
    run.mkdir()
    (conf / "fail2ban.local").write_text(
        f"[Definition]\nloglevel = INFO\nlogtarget = {run / 'fail2ban.log'}\n"
        f"socket = {run / 'fail2ban.sock'}\npidfile = {run / 'fail2ban.pid'}\n"
        f"dbfile = :memory:\n")
    with (run / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [server, "-f", "-x", "-c", str(conf), "-s", str(run / "fail2ban.sock"),
             "-p", str(run / "fail2ban.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        def banned() -> bool:
            assert proc.poll() is None, (run / "stderr").read_text()
            return bans.exists() and "+127.0.0.1" in bans.read_text().split()

        wait_for(banned, timeout=15, what=f"a ban; fail2ban log: {run / 'fail2ban.log'}")
        status = _run(client, "-c", str(conf), "-s", str(run / "fail2ban.sock"),
                      "status", "popproxy")
        assert re.search(r"Banned IP list:\s+127\.0\.0\.1\s*$", status, re.MULTILINE), status
        assert re.search(r"Total failed:\s+6\b", status), status
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
