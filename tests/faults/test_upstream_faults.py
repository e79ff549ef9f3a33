"""The upstream fails: refuses, hangs, resets, closes or talks garbage.

Defined outcome for every case: the client gets ``-ERR [SYS/TEMP]`` and a clean close (after
whatever part of a response was already relayed, never with a body terminator that would make
a cut message look complete); the upstream receives no QUIT (a DELE given before the fault is
not committed, RFC 1939 section 6) and its connection is closed by the proxy; the failure is
in the audit log; the proxy keeps serving other users, also while the faulty one hangs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.support import (
    SYS_TEMP,
    UPSTREAM_DOWN,
    VICTIM,
    FakeUpstream,
    FaultRig,
    Reply,
    demo_session,
    fake_upstream,
    fault_rig,
    faulty_upstream,
    unused_port,
    victim_login,
)
from tests.helpers import LoopThread
from tests.integration.rawpop import RawPOP3, wait_for

SHORT = 0.5  # upstream timeouts in the hanging cases (seconds)
PARTIAL_RETR = b"+OK 100000 octets\r\nSubject: cut short\r\n\r\n" + b"a body line\r\n" * 200


def _login_fails(rig: FaultRig) -> bytes:
    """``victim`` logs in; returns the PASS reply after checking the connection then closes."""
    with RawPOP3(rig.port) as client:
        assert client.greeting.startswith(b"+OK")  # the proxy greets on its own
        assert client.command(f"USER {VICTIM}").startswith(b"+OK")
        reply = client.command("PASS secret")
        assert client.read_until_eof() == b""  # a clean close, nothing more
    return reply


def _assert_login_fault_recorded(rig: FaultRig, reason: str) -> None:
    observed = rig.observed
    assert observed.sample("popproxy_upstream_errors_total", upstream="faulty",
                           reason=reason) == 1
    assert observed.sample("popproxy_logins_total", result="upstream_error") == 1
    (login,) = observed.events("login", result="upstream_error")
    assert (login["user"], login["upstream"], login["reason"]) == (VICTIM, "faulty", reason)
    assert [e["user"] for e in observed.events("upstream_error")] == [VICTIM]


# --------------------------------------------------------------------------- during login
def test_upstream_refuses_connection(loop_thread: LoopThread) -> None:
    with fault_rig(loop_thread, faulty_upstream(unused_port())) as rig:
        assert _login_fails(rig).startswith(SYS_TEMP)
        _assert_login_fault_recorded(rig, "connect")
        rig.idle()
        assert demo_session(rig.port) < 2


def test_upstream_accepts_but_never_greets(loop_thread: LoopThread) -> None:
    fake = FakeUpstream(greeting=None)
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port, greeting_timeout=SHORT)) as rig:
        with ThreadPoolExecutor(1) as pool:
            victim = pool.submit(_login_fails, rig)
            wait_for(lambda: fake.connections == 1, what="the proxy to connect upstream")
            assert demo_session(rig.port) < SHORT  # served while the victim waits
            assert victim.result(10).startswith(SYS_TEMP)
        _assert_login_fault_recorded(rig, "timeout")
        wait_for(lambda: fake.closed_by_proxy == 1, what="the upstream connection to close")
        assert fake.verbs == []  # no credentials, no QUIT: nothing was sent at all


def test_upstream_hangs_after_pass(loop_thread: LoopThread) -> None:
    fake = FakeUpstream(replies={"PASS": Reply(b"", "hang")})
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port, response_timeout=SHORT)) as rig:
        with ThreadPoolExecutor(1) as pool:
            victim = pool.submit(_login_fails, rig)
            wait_for(lambda: "PASS" in fake.verbs, what="PASS to reach the upstream")
            assert demo_session(rig.port) < SHORT
            assert victim.result(10).startswith(SYS_TEMP)
        _assert_login_fault_recorded(rig, "timeout")
        wait_for(lambda: fake.closed_by_proxy == 1, what="the upstream connection to close")
        assert fake.verbs == ["USER", "PASS"]


# --------------------------------------------------------------------------- after login
# (command sent after DELE 1, what the fake upstream does in reply)
MID_SESSION = {
    "hang-mid-retr": ("RETR 2", Reply(PARTIAL_RETR, "hang")),
    "reset-mid-retr": ("RETR 2", Reply(PARTIAL_RETR, "reset")),
    "close-mid-retr": ("RETR 2", Reply(PARTIAL_RETR, "close")),
    "hang-before-status": ("STAT", Reply(b"", "hang")),
    "garbage-status": ("STAT", Reply(b"Hello, this is not POP3\r\n")),
    "binary-garbage": ("STAT", Reply(bytes(range(256)).replace(b"\n", b"") * 4, "hang")),
    "long-status-line": ("STAT", Reply(b"+OK " + b"9" * 600 + b"\r\n")),
    "unsolicited-continuation": ("STAT", Reply(b"+ \r\n")),
}


@pytest.mark.parametrize("case", list(MID_SESSION))
def test_upstream_fails_after_login(loop_thread: LoopThread, case: str) -> None:
    command, reply = MID_SESSION[case]
    fake = FakeUpstream(replies={command.split()[0]: reply})
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port, response_timeout=SHORT)) as rig:
        with victim_login(rig.port) as client:
            assert client.command("DELE 1") == b"+OK\r\n"
            client.send(command.encode() + b"\r\n")
            received = client.read_until_eof()
        assert received.endswith(UPSTREAM_DOWN), received[-200:]
        if command.startswith("RETR"):
            # Relayed as far as it came, but never with a terminator: a cut message must not
            # look complete to the client.
            assert received.startswith(b"+OK 100000 octets\r\n")
            assert b"\r\n.\r\n" not in received
        else:
            assert received == UPSTREAM_DOWN
        rig.idle()
        assert fake.verbs == ["USER", "PASS", "DELE", command.split()[0]]  # no QUIT
        if reply.then in ("hang", "continue"):
            wait_for(lambda: fake.closed_by_proxy == 1, what="the upstream connection to close")
        (event,) = rig.observed.events("upstream_error")
        assert event["user"] == VICTIM
        observed = rig.observed  # counted where the "upstream failing" alert looks
        assert observed.total("popproxy_upstream_errors_total", upstream="faulty") == 1
        assert observed.sample("popproxy_upstream_errors_total", upstream="faulty",
                               reason=event["reason"]) == 1
        assert demo_session(rig.port) < 2
