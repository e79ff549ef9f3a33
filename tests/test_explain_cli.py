"""``popproxy explain`` and ``popproxy test-login`` (issue 19 item 8) without Dovecot: argument
handling, the password source, the lockout lines.  Real Dovecot and Redis:
tests/integration/test_explain_dovecot.py."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from popproxy.explain_cli import lockout_state, main_explain, main_test_login, read_password
from popproxy.policy import Lockout
from popproxy.policy.decisions import parse_address
from popproxy.policy.lockout import make_keys
from popproxy.proxy.host_state import default_db_path
from popproxy.proxy.store_sqlite import SqliteStore

POLICY = """\
listeners:
  - {name: pop3s, port: 995, mode: tls, deny: [192.0.2.0/24]}
  - {name: stls, port: 110, mode: starttls}
upstream: {host: 127.0.0.1, port: 1}
routes: [{match: '*@old.example', upstream: old}]
upstreams: {old: {host: 127.0.0.1, port: 2}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def _explain(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main_explain(list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


def test_explain_prints_every_decision_and_exits_by_the_verdict(policy: Path) -> None:
    status, out, _ = _explain("--config", str(policy), "--user", "bob@old.example",
                              "--from", "198.51.100.1", "--listener", "pop3s")
    assert status == 0
    assert "route: old\nupstream: 127.0.0.1:2 (plain)\n" in out
    assert out.endswith("lockout: counters live in the running proxy's memory (one process, "
                        "no lockout Redis): not visible from here\n")
    status, out, _ = _explain("-c", str(policy), "-u", "bob", "--from", "192.0.2.9", "-l",
                              "pop3s")
    assert status == 1 and "connect: DENIED (source network denied by listener)" in out


def test_explain_refuses_bad_arguments_with_the_fix(policy: Path) -> None:
    status, _, err = _explain("-c", str(policy), "-u", "bob", "--from", "10.0.0.300")
    assert status == 2 and err == "popproxy explain: --from 10.0.0.300: not an IP address\n"
    status, _, err = _explain("-c", str(policy), "-u", "bob", "--from", "10.0.0.3")
    assert status == 2 and "several listeners, choose one with --listener: pop3s, stls" in err


def test_lockout_state_off_or_without_a_key() -> None:
    off = Lockout(enabled=False)
    assert asyncio.run(lockout_state(off, Path("/nonexistent"), "u", "10.0.0.1")) == (
        "lockout: off")
    shared = Lockout(redis_url="redis://127.0.0.1:1/0")
    assert asyncio.run(lockout_state(shared, Path("/nonexistent"), "u", "10.0.0.1")) == (
        "lockout: no key at /nonexistent/lockout.key yet, so nothing was ever counted")


def test_lockout_state_of_one_process_without_redis_is_not_visible(tmp_path: Path) -> None:
    line = asyncio.run(lockout_state(Lockout(), tmp_path, "u", "10.0.0.1"))
    assert line.startswith("lockout: counters live in the running proxy's memory")
    line = asyncio.run(lockout_state(Lockout(), tmp_path, "u", "10.0.0.1", workers=2))
    assert line == (f"lockout: no host file at {default_db_path(tmp_path)} yet, so nothing "
                    "was ever counted")


def test_lockout_state_with_workers_reads_the_host_file(tmp_path: Path) -> None:
    """Workers without Redis keep their counters in <state_dir>/host.sqlite3 (issue 18):
    explain reads them there, with the key the proxy made."""
    settings = Lockout()
    (tmp_path / "lockout.key").write_bytes(b"k" * 32)
    address = parse_address("10.0.0.1")
    assert address is not None
    keys = make_keys(b"k" * 32, "u", address, settings)

    async def fail_twice() -> None:
        store = SqliteStore(default_db_path(tmp_path))
        for tag in ("a", "b"):
            await store.record_failure(keys, tag, 1000.0, settings.window)
        await store.close()

    asyncio.run(fail_twice())
    line = asyncio.run(lockout_state(settings, tmp_path, "u", "10.0.0.1", now=1001.0,
                                     workers=2))
    assert f"pair 2 (limit {settings.pair.block_after})" in line
    assert "account 2" in line and "source 2" in line
    other = asyncio.run(lockout_state(settings, tmp_path, "v", "10.0.0.2", now=1001.0,
                                      workers=2))
    assert "lockout: not locked" in other and "pair 0" in other


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_the_password_comes_from_a_pipe_without_its_line_end() -> None:
    assert read_password("u", _Pipe("s3cret pass\r\nignored\n")) == b"s3cret pass"


def test_test_login_refused_by_policy_never_asks_the_upstream(policy: Path) -> None:
    out = io.StringIO()
    status = main_test_login(["bob", "-c", str(policy), "-l", "pop3s", "--from", "192.0.2.1"],
                             _Pipe("pw\n"), out, io.StringIO())
    assert status == 1
    assert out.getvalue() == ("route: default\nupstream: 127.0.0.1:1 (plain)\n"
                              "connect: DENIED (source network denied by listener)\n"
                              "login USER: allowed (no user rule)\n"
                              "result: refused by the policy (the upstream was not asked)\n")


def test_test_login_with_an_unreachable_upstream_exits_2(policy: Path) -> None:
    out = io.StringIO()
    status = main_test_login(["bob", "-c", str(policy)], _Pipe("pw\n"), out, io.StringIO())
    assert status == 2
    assert out.getvalue() == ("route: default\nupstream: 127.0.0.1:1 (plain)\n"
                              "result: upstream unusable: connect failed "
                              "(127.0.0.1:1): Connection refused\n")
