"""The CAPA the proxy sends before its first login to an upstream (to learn PIPELINING, RFC 2449
section 6.6) must never cost the user a login: whatever the upstream does with it, the login
goes on (on a fresh connection if needed) and that upstream is remembered as "no pipelining".
And a pipelined USER+PASS whose USER is refused is an ordinary failed login, even if the server
then hangs up (no "[SYS/TEMP]" that would tell a guesser the account does not exist)."""

from __future__ import annotations

import pytest

from tests.faults.support import (
    VICTIM,
    FakeUpstream,
    Reply,
    fake_upstream,
    fault_rig,
    faulty_upstream,
    victim_login,
)
from tests.helpers import LoopThread
from tests.integration.rawpop import RawPOP3

CAPA_FAULTS = {
    "closes": Reply(b"", "close"),
    "resets": Reply(b"", "reset"),
    "ok-without-list": Reply(b"+OK\r\n", "hang"),  # a list that never comes
    "nonstandard-status": Reply(b"-ERROR unknown\r\n"),
    "garbage": Reply(b"\xff\xfe nonsense\r\n"),
}


@pytest.mark.parametrize("case", sorted(CAPA_FAULTS))
def test_failed_capa_falls_back_to_one_command_per_write(loop_thread: LoopThread,
                                                         case: str) -> None:
    fake = FakeUpstream(replies={"CAPA": CAPA_FAULTS[case]})
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port, greeting_timeout=0.5)) as rig:
        for _ in range(2):
            client = victim_login(rig.port)
            with client:
                assert client.command("NOOP").startswith(b"+OK")
        assert fake.verbs.count("CAPA") == 1  # remembered: no second attempt
        assert fake.verbs.count("USER") == 2 and fake.verbs.count("PASS") == 2


def test_pipelined_user_refused_then_hangup_is_a_failed_login(loop_thread: LoopThread) -> None:
    fake = FakeUpstream(replies={
        "CAPA": Reply(b"+OK\r\nPIPELINING\r\nUSER\r\n.\r\n"),
        "USER": Reply(b"-ERR no such user\r\n", "close"),
    })
    with fake_upstream(loop_thread, fake) as port, \
            fault_rig(loop_thread, faulty_upstream(port)) as rig, RawPOP3(rig.port) as client:
        assert client.command(f"USER {VICTIM}").startswith(b"+OK")
        assert client.command("PASS secret") == b"-ERR [AUTH] authentication failed\r\n"
        assert rig.observed.sample("popproxy_logins_total", result="bad_credentials") == 1
        assert rig.observed.sample("popproxy_logins_total", result="upstream_error") == 0
