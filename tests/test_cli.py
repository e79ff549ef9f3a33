"""The `popproxy run` process: demo default works, SIGTERM drains sessions, SIGHUP reloads certs."""

from __future__ import annotations

import os
import poplib
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme

from tests.support.ports import accepts, free_port
from tests.support.waiting import run_until_ready_then_stop, wait_for


class Popproxy(subprocess.Popen[str]):
    """``popproxy run``; after start-up its output lines collect in ``lines``."""

    lines: list[str]

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def _collect(proc: Popproxy) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        proc.lines.append(line)


@contextmanager
def _popproxy(config: Path, cwd: Path) -> Iterator[Popproxy]:
    proc = Popproxy(
        [sys.executable, "-m", "popproxy", "run", "--config", str(config)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("popproxy ready"):
                break
        else:
            pytest.fail(f"popproxy did not start (exit {proc.wait()})")
        proc.lines = []
        threading.Thread(target=_collect, args=(proc,), daemon=True).start()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _config(tmp_path: Path, tls_block: str = "", grace: float = 20) -> tuple[Path, int, int]:
    stls, tls, upstream = free_port(), free_port(), free_port()
    path = tmp_path / "policy.yaml"
    path.write_text(
        "listeners:\n"
        f"  - {{name: stls, port: {stls}, mode: starttls}}\n"
        f"  - {{name: tls, port: {tls}, mode: tls}}\n"
        f"upstream: {{port: {upstream}}}\n"
        f"limits: {{shutdown_grace: {grace}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "demo_upstream: {enabled: true}\n" + tls_block
    )
    return path, stls, tls


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_default_run_serves_demo_mail_over_both_modes(tmp_path: Path) -> None:
    config, stls, tls = _config(tmp_path)
    with _popproxy(config, tmp_path):
        trusted = ssl.create_default_context(cafile=str(tmp_path / "state" / "selfsigned.crt"))
        client = poplib.POP3_SSL("127.0.0.1", tls, context=trusted)
        client.user("demo")
        client.pass_("demo")
        assert client.stat()[0] == 3
        client.quit()
        plain = poplib.POP3("127.0.0.1", stls)
        plain.stls(trusted)
        plain.user("demo")
        plain.pass_("demo")
        assert plain.retr(2)[1][4] == b".a line starting with a dot"
        plain.quit()


def test_sigterm_stops_accepting_and_lets_sessions_finish(tmp_path: Path) -> None:
    config, _, tls = _config(tmp_path)
    with _popproxy(config, tmp_path) as proc:
        client = poplib.POP3_SSL("127.0.0.1", tls, context=_insecure())
        client.user("demo")
        client.pass_("demo")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: not accepts(tls), what="the listener to close")
        assert proc.poll() is None  # still draining the open session
        assert client.retr(1)[1][-1] == b"This message came through the proxy."
        client.quit()
        assert proc.wait(10) == 0


def test_sessions_open_at_the_end_of_the_grace_are_told_before_the_close(
        tmp_path: Path) -> None:
    """Issue 19 item 7: a real client idle mid-session (a DELE pending) gets -ERR [SYS/TEMP]
    as the answer to its next command.  That no QUIT reached the upstream, so the DELE was not
    committed, is asserted in tests/proxy/test_server.py (in-process, the upstream visible)."""
    config, _, tls = _config(tmp_path, grace=0.5)
    with _popproxy(config, tmp_path) as proc:
        client = poplib.POP3_SSL("127.0.0.1", tls, context=_insecure())
        client.user("demo")
        client.pass_("demo")
        client.dele(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        with pytest.raises(poplib.error_proto) as refused:
            client.stat()
        assert refused.value.args[0] == b"-ERR [SYS/TEMP] server shutting down"
        client.close()


def test_sighup_reloads_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    block = f"tls:\n  certificates:\n    - {{cert: {pem}, key: {pem}}}\n"
    config, _, tls = _config(tmp_path, block)
    with _popproxy(config, tmp_path) as proc:
        first = _peer_cert(tls)
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(pem)
        )
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _peer_cert(tls) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _peer_cert(tls) != first
        wait_for(lambda: proc.said("TLS certificates reloaded"), what="the reload to be logged")
        pem.write_text("not a certificate\n")  # a broken file keeps the last good one
        second = _peer_cert(tls)
        os.kill(proc.pid, signal.SIGHUP)
        # Wait for the refusal itself (an event), then check it changed nothing.
        wait_for(lambda: proc.said("TLS reload failed"), what="the reload to be refused")
        assert _peer_cert(tls) == second


def _peer_cert(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, _insecure().wrap_socket(
        raw, server_hostname="localhost"
    ) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_reload_refused_for_a_file_is_audited_with_the_reason(tmp_path: Path) -> None:
    """SIGHUP's validation is load_checked: the schema and every file the policy names."""
    from popproxy.cli import _reload_policy
    from popproxy.proxy.server import ProxyServer
    from tests.faults.support import Observed
    from tests.helpers import make_config

    observed = Observed.new()
    server = ProxyServer(make_config(1, state_dir=str(tmp_path)), observed.observer)
    policy = tmp_path / "policy.yaml"
    policy.write_text("listeners: [{name: pop3, port: 1, mode: tls}]\n"
                      "tls: {certificates: [{cert: gone.crt, key: gone.key}]}\n")
    reason = _reload_policy(server, policy)
    assert reason.startswith(f"tls.certificates.0.cert: {tmp_path}/gone.crt: no such file")
    (event,) = observed.events("config_reload")
    assert event["result"] == "refused" and event["error"] == reason
    assert observed.sample("popproxy_config_reloads_total", kind="policy", result="refused") == 1


def test_workers_come_from_the_flag_then_the_environment_then_the_policy() -> None:
    from popproxy.policy import Policy
    from popproxy.proxy.supervisor import workers_setting

    listeners = [{"name": "a", "port": 1, "mode": "tls"}]
    auto = Policy.model_validate({"listeners": listeners})
    three = Policy.model_validate({"listeners": listeners, "workers": 3})
    cpus = len(os.sched_getaffinity(0))
    assert auto.workers == "auto"  # the shipped default
    assert workers_setting(None, auto, {}) == cpus
    assert workers_setting(None, three, {}) == 3
    assert workers_setting(None, three, {"POPPROXY_WORKERS": "1"}) == 1
    assert workers_setting(None, three, {"POPPROXY_WORKERS": "auto"}) == cpus
    assert workers_setting(2, three, {"POPPROXY_WORKERS": "1"}) == 2
    with pytest.raises(ValueError):
        workers_setting(None, three, {"POPPROXY_WORKERS": "0"})


def test_workers_flag_must_be_auto_or_positive(capsys: pytest.CaptureFixture[str]) -> None:
    from popproxy.cli import build_parser

    assert build_parser().parse_args(["run", "-c", "p", "--workers", "auto"]).workers == "auto"
    assert build_parser().parse_args(["run", "-c", "p", "--workers", "4"]).workers == 4
    for bad in ("0", "many"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(["run", "-c", "p", "--workers", bad])
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--workers" in err and "auto or a whole number from 1" in err
    assert "workers_value" not in err  # (argparse named the converter function)


def test_a_log_level_typo_is_a_usage_error_not_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    from popproxy.cli import build_parser

    assert build_parser().parse_args(["run", "-c", "p", "--log-level", "debug"]).log_level \
        == "DEBUG"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "-c", "p", "--log-level", "foo"])
    assert exited.value.code == 2
    assert "invalid choice: 'FOO'" in capsys.readouterr().err


def test_a_reader_that_stops_reading_ends_a_command_quietly() -> None:
    """Regression: ``popproxy schema | head`` ended with a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write is EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "popproxy", "schema"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_event_loop_default_is_auto_which_is_uvloop_where_it_imports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from popproxy.cli import build_parser, resolve_event_loop

    assert build_parser().parse_args(["run", "-c", "p"]).event_loop == "auto"
    assert resolve_event_loop("asyncio") == "asyncio"
    assert resolve_event_loop("uvloop") == "uvloop"
    pytest.importorskip("uvloop")
    assert resolve_event_loop("auto") == "uvloop"
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    assert resolve_event_loop("auto") == "asyncio"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_start_names_the_certificate_resolved_and_sigterm_ends_with_stopped(
        tmp_path: Path, workers: str) -> None:
    """Regression (admin review): the start-up line said ``.../policies/../tls/server.pem``,
    and after SIGTERM the log just ended (a crash looks the same), in one process and with
    workers."""
    (tmp_path / "tls").mkdir()
    pem = tmp_path / "tls" / "server.pem"
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    pem.chmod(0o600)  # (a private key: no warning about its mode)
    (tmp_path / "policies").mkdir()
    _config(tmp_path / "policies", "tls: {certificates: [{cert: ../tls/server.pem, "
                                   "key: ../tls/server.pem}]}\n", grace=1)
    lines = run_until_ready_then_stop(
        [sys.executable, "-m", "popproxy", "run", "--config", "policies/policy.yaml",
         "--workers", workers], tmp_path / "out.log", tmp_path).splitlines()
    assert any(line.startswith(f"TLS certificate {pem.resolve()} SHA-256 ") for line in lines)
    assert not any("/../" in line for line in lines if line.startswith("TLS certificate"))
    assert lines[-1].endswith(": stopped"), lines[-3:]
