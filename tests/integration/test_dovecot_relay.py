"""The proxy in front of a real Dovecot: what a client sees through the proxy must be exactly
what Dovecot itself answers (byte for byte after login), for poplib, curl and raw sockets."""

from __future__ import annotations

import base64
import poplib
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from tests.helpers import RunningProxy
from tests.integration.dovecot import Dovecot
from tests.integration.mailboxes import BIG_MESSAGE_BYTES
from tests.integration.rawpop import RawPOP3, wait_for

pytestmark = pytest.mark.dovecot

# alice's mailbox (tests/integration/mailboxes.py): 1 plain, 2 dot lines, 3 8-bit,
# 4 no final newline, 5 multi-MiB, 6 plain.
DOTS, EIGHT_BIT, NO_FINAL_NEWLINE, BIG = 2, 3, 4, 5


def _stuffed(wire: bytes) -> bytes:
    """RFC 1939 section 3 dot-stuffing plus the terminator."""
    lines = wire.split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def _direct_and_proxied(dovecot: Dovecot, proxy: RunningProxy, user: str,
                        commands: list[str]) -> tuple[list[bytes], list[bytes]]:
    """The raw responses to ``commands`` after login: directly from Dovecot, and via the proxy."""
    answers: list[list[bytes]] = []
    for port in (dovecot.port, proxy.port):
        with RawPOP3(port) as c:
            c.login(user, dovecot.password(user))
            answers.append([c.command(cmd) for cmd in commands])
            assert c.command("QUIT").startswith(b"+OK")
    return answers[0], answers[1]


# ---------------------------------------------------------------------- raw byte comparison
RELAYED_COMMANDS = [
    "STAT",
    "LIST",
    "LIST 2",
    "LIST 99",
    "UIDL",
    "UIDL 5",
    "UIDL 0",
    "TOP 1 0",
    "TOP 2 3",
    "TOP 2 100",
    f"TOP {BIG} 20",
    *(f"RETR {n}" for n in range(1, 7)),
    "RETR 7",
    "RETR 0",
    "LIST 0",
    "TOP 1 4294967295",
    "retr 2",  # the proxy re-serialises the verb in upper case
    "list 00003",
    "NOOP",
    "RSET",
]


@pytest.mark.parametrize("command", RELAYED_COMMANDS)
def test_response_bytes_identical_to_direct(
    dovecot: Dovecot, dovecot_proxy: RunningProxy, command: str
) -> None:
    direct, proxied = _direct_and_proxied(dovecot, dovecot_proxy, "alice", [command])
    assert proxied == direct
    if command.startswith("RETR") and direct[0].startswith(b"+OK"):
        msg = dovecot.users["alice"].messages[int(command.split()[1]) - 1]
        status, _, body = proxied[0].partition(b"\r\n")
        assert status == f"+OK {msg.octets} octets".encode()
        assert body == _stuffed(msg.wire)


def test_big_and_dot_messages_are_stuffed_on_the_wire(
    dovecot: Dovecot, dovecot_proxy: RunningProxy
) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        c.login("alice", "alicepw")
        dots = c.command(f"RETR {DOTS}")
        big = c.command(f"RETR {BIG}")
    assert b"\r\n..a line starting with one dot\r\n...a line starting with two dots\r\n" in dots
    assert b"\r\n..\r\n...\r\n....\r\n" in dots
    assert dots.endswith(b"message)\r\n..\r\n.\r\n")
    assert len(big) > BIG_MESSAGE_BYTES
    dot_lines = dovecot.users["alice"].messages[BIG - 1].wire.count(b"\r\n.")
    assert dot_lines > 50  # dot lines all through the multi-MiB body, each one stuffed
    assert big.count(b"\r\n..") == dot_lines
    assert big.endswith(b"\r\n.\r\n")


def test_empty_mailbox_identical(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    direct, proxied = _direct_and_proxied(
        dovecot, dovecot_proxy, "empty", ["STAT", "LIST", "UIDL", "RETR 1"]
    )
    assert proxied == direct
    assert proxied[0] == b"+OK 0 0\r\n"


def test_pipelined_commands_answered_in_order(dovecot: Dovecot,
                                              dovecot_proxy: RunningProxy) -> None:
    commands = ["STAT", "LIST", "UIDL", f"TOP {DOTS} 2", f"RETR {DOTS}", f"RETR {BIG}",
                "LIST 4", "RETR 42", "NOOP", f"RETR {NO_FINAL_NEWLINE}", "QUIT"]
    direct, _ = _direct_and_proxied(dovecot, dovecot_proxy, "alice", commands[:-1])
    with RawPOP3(dovecot_proxy.port) as c:
        # The login is pipelined too: everything goes out in one write.
        c.send(b"USER alice\r\nPASS alicepw\r\n" + b"".join(f"{x}\r\n".encode() for x in commands))
        assert c.read_line().startswith(b"+OK")  # USER
        assert c.read_line().startswith(b"+OK")  # PASS
        proxied = [c.read_response(cmd in ("LIST", "UIDL") or cmd.startswith(("TOP", "RETR")))
                   for cmd in commands]
        assert proxied[-1].startswith(b"+OK")  # QUIT
        assert c.read_until_eof() == b""
    assert proxied[:-1] == direct


def test_pipelined_then_half_close_gets_every_answer(dovecot: Dovecot,
                                                    dovecot_proxy: RunningProxy) -> None:
    """A batch client (send everything, shut down writing) still gets all answers."""
    with RawPOP3(dovecot_proxy.port) as c:
        c.send_and_shutdown(b"USER alice\r\nPASS alicepw\r\nSTAT\r\nRETR %d\r\nQUIT\r\n" % BIG)
        assert c.read_line().startswith(b"+OK")
        assert c.read_line().startswith(b"+OK")
        assert c.read_line().startswith(b"+OK 6 ")
        big = dovecot.users["alice"].messages[BIG - 1]
        assert c.read_response(multiline=True) == (
            b"+OK %d octets\r\n" % big.octets + _stuffed(big.wire)
        )
        assert c.read_until_eof().startswith(b"+OK")  # QUIT


def test_capa_after_login_is_filtered_upstream_capa(dovecot: Dovecot,
                                                   dovecot_proxy: RunningProxy) -> None:
    direct, proxied = _direct_and_proxied(dovecot, dovecot_proxy, "alice", ["CAPA"])
    direct_lines = direct[0].split(b"\r\n")
    proxied_lines = proxied[0].split(b"\r\n")
    assert proxied_lines[0] == direct_lines[0]
    hidden = (b"USER", b"SASL", b"STLS", b"IMPLEMENTATION")
    assert proxied_lines[1:] == [ln for ln in direct_lines[1:] if not ln.startswith(hidden)]
    assert b"TOP" in proxied_lines and b"UIDL" in proxied_lines


def test_greeting_does_not_leak_dovecot_banner(dovecot: Dovecot,
                                               dovecot_proxy: RunningProxy) -> None:
    with RawPOP3(dovecot.port) as direct, RawPOP3(dovecot_proxy.port) as proxied:
        assert b"Dovecot" in direct.greeting
        assert proxied.greeting.startswith(b"+OK")
        assert b"Dovecot" not in proxied.greeting
        assert b"<" not in proxied.greeting  # no APOP timestamp (APOP is not offered)


# ---------------------------------------------------------------------- poplib
@dataclass
class _PoplibView:
    stat: tuple[int, int]
    listing: list[bytes]
    uidls: list[bytes]
    tops: list[list[bytes]] = field(default_factory=list)
    messages: list[list[bytes]] = field(default_factory=list)
    single: list[object] = field(default_factory=list)


def _poplib_view(port: int, user: str, password: str) -> _PoplibView:
    client = poplib.POP3("127.0.0.1", port, timeout=15)
    try:
        client.user(user)
        client.pass_(password)
        view = _PoplibView(client.stat(), client.list()[1], client.uidl()[1])
        for n in range(1, view.stat[0] + 1):
            view.tops.append(client.top(n, 2)[1])
            view.messages.append(client.retr(n)[1])
        view.single += [client.list(2), client.uidl(2)]
        client.quit()
    finally:
        client.close()
    return view


def test_poplib_sees_the_same_mailbox(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    direct = _poplib_view(dovecot.port, "alice", "alicepw")
    proxied = _poplib_view(dovecot_proxy.port, "alice", "alicepw")
    assert proxied == direct
    messages = dovecot.users["alice"].messages
    assert proxied.stat == (len(messages), sum(m.octets for m in messages))
    assert len(proxied.uidls) == len(messages)
    # poplib un-stuffs: RETR gives back the stored message, line for line.
    for lines, msg in zip(proxied.messages, messages, strict=True):
        assert b"\r\n".join(lines) + b"\r\n" == msg.wire, msg.label


def test_poplib_password_with_space(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    client = poplib.POP3("127.0.0.1", dovecot_proxy.port, timeout=15)
    try:
        client.user("dave")
        assert client.pass_("d4ve p@ss%&!").startswith(b"+OK")
        assert client.stat()[0] == 1
        client.quit()
    finally:
        client.close()


# ---------------------------------------------------------------------- curl
def _curl(port: int, path: str, *options: str, user: str = "alice:alicepw") -> bytes:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed (apt-get install curl)")
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *options,
         f"pop3://{user}@127.0.0.1:{port}{path}"],
        capture_output=True, check=False, timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("/", ()),  # LIST
        ("/", ("-X", "UIDL")),
        ("/", ("-X", f"TOP {DOTS} 3")),
        (f"/{DOTS}", ()),  # RETR, default SASL PLAIN
        (f"/{EIGHT_BIT}", ("--sasl-ir",)),  # AUTH PLAIN with initial response
        (f"/{NO_FINAL_NEWLINE}", ("--login-options", "AUTH=LOGIN")),
        (f"/{BIG}", ()),
    ],
    ids=["list", "uidl", "top", "retr-dots", "retr-8bit-sasl-ir", "retr-nonl-login", "retr-big"],
)
def test_curl_output_identical(dovecot: Dovecot, dovecot_proxy: RunningProxy, path: str,
                               options: tuple[str, ...]) -> None:
    direct = _curl(dovecot.port, path, *options)
    proxied = _curl(dovecot_proxy.port, path, *options)
    assert proxied == direct
    messages = dovecot.users["alice"].messages
    if path != "/":  # RETR: curl un-stuffs, so this is the stored message with CRLF
        assert proxied == messages[int(path[1:]) - 1].wire
    elif options and options[1].startswith("TOP"):
        head, _, body = messages[DOTS - 1].wire.partition(b"\r\n\r\n")
        assert proxied == head + b"\r\n\r\n" + b"".join(body.split(b"\r\n")[i] + b"\r\n"
                                                     for i in range(3))
    else:  # LIST or UIDL: one line per message
        assert [ln.split(b" ")[0] for ln in proxied.splitlines()] == [b"1", b"2", b"3", b"4",
                                                                      b"5", b"6"]


def test_curl_wrong_password_fails(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    result = subprocess.run(
        ["curl", "--silent", "--max-time", "20",
         f"pop3://alice:wrong@127.0.0.1:{dovecot_proxy.port}/1"],
        capture_output=True, check=False, timeout=30,
    )
    assert result.returncode == 67  # CURLE_LOGIN_DENIED
    assert result.stdout == b""


# ---------------------------------------------------------------------- authentication
def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_auth_plain_with_initial_response(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        reply = c.command(b"AUTH PLAIN " + _b64(b"\0alice\0alicepw"))
        assert reply.startswith(b"+OK")
        total = sum(m.octets for m in dovecot.users["alice"].messages)
        assert c.command("STAT") == b"+OK 6 %d\r\n" % total


@pytest.mark.parametrize("authzid", [b"", b"dave"])
def test_auth_plain_continuation_password_with_space(
    dovecot: Dovecot, dovecot_proxy: RunningProxy, authzid: bytes
) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        assert c.command("AUTH PLAIN") == b"+ \r\n"
        reply = c.command(_b64(authzid + b"\0dave\0d4ve p@ss%&!"))
        assert reply.startswith(b"+OK"), reply
        assert c.command("STAT").startswith(b"+OK 1 ")


def test_auth_login(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        assert c.command("AUTH LOGIN") == b"+ " + _b64(b"Username:") + b"\r\n"
        assert c.command(_b64(b"bob")) == b"+ " + _b64(b"Password:") + b"\r\n"
        assert c.command(_b64(b"bobpw")).startswith(b"+OK")
        assert c.command("STAT").startswith(b"+OK 3 ")


def test_wrong_password_then_session_still_usable(dovecot: Dovecot,
                                                  dovecot_proxy: RunningProxy) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        assert c.command("USER alice").startswith(b"+OK")
        assert c.command("PASS not-the-password").startswith(b"-ERR")
        assert c.command("STAT").startswith(b"-ERR")  # still not logged in
        assert c.command(b"AUTH PLAIN " + _b64(b"\0alice\0wrong")).startswith(b"-ERR")
        c.login("alice", "alicepw")
        assert c.command("STAT").startswith(b"+OK 6 ")
        assert c.command("QUIT").startswith(b"+OK")


def test_wrong_password_gets_the_proxys_fixed_auth_reply(dovecot: Dovecot,
                                                         dovecot_proxy: RunningProxy) -> None:
    """Dovecot's [AUTH] failure becomes the proxy's one fixed reply (same as a policy deny)."""
    replies = []
    for port in (dovecot.port, dovecot_proxy.port):
        with RawPOP3(port) as c:
            c.command("USER alice")
            replies.append(c.command("PASS nope"))
    assert replies[0].startswith(b"-ERR [AUTH]")
    assert replies[1] == b"-ERR [AUTH] authentication failed\r\n"


def test_unknown_user_refused(dovecot_proxy: RunningProxy) -> None:
    with RawPOP3(dovecot_proxy.port) as c:
        assert c.command("USER nobody-here").startswith(b"+OK")  # the proxy cannot know yet
        assert c.command("PASS whatever").startswith(b"-ERR")


# ---------------------------------------------------------------------- DELE and UPDATE state
def _direct_stat(dovecot: Dovecot, user: str) -> bytes:
    with RawPOP3(dovecot.port) as c:
        c.login(user, dovecot.password(user))
        return c.command("STAT")


def _wait_sessions_gone(proxy: RunningProxy) -> None:
    wait_for(lambda: proxy.server.session_count == 0, what="proxy sessions to end")
    time.sleep(0.3)  # Dovecot would commit a (wrongly) relayed QUIT within this time


def test_dele_then_drop_without_quit_keeps_message(dovecot: Dovecot,
                                                   dovecot_proxy: RunningProxy) -> None:
    """Regression: a client that vanishes after DELE must not have its deletion committed
    (RFC 1939 section 6: only QUIT enters UPDATE)."""
    dovecot.reset_mailbox("dele")
    before = _direct_stat(dovecot, "dele")
    assert before.startswith(b"+OK 3 ")
    c = RawPOP3(dovecot_proxy.port)
    c.login("dele", "delepw")
    assert c.command("DELE 1").startswith(b"+OK")
    assert c.command("STAT").startswith(b"+OK 2 ")
    c.reset()  # RST, no QUIT
    _wait_sessions_gone(dovecot_proxy)
    assert _direct_stat(dovecot, "dele") == before


def test_dele_then_close_without_quit_keeps_message(dovecot: Dovecot,
                                                    dovecot_proxy: RunningProxy) -> None:
    dovecot.reset_mailbox("dele")
    before = _direct_stat(dovecot, "dele")
    with RawPOP3(dovecot_proxy.port) as c:
        c.login("dele", "delepw")
        assert c.command("DELE 2").startswith(b"+OK")
    _wait_sessions_gone(dovecot_proxy)  # orderly FIN, still no QUIT
    assert _direct_stat(dovecot, "dele") == before


def test_dele_then_half_close_keeps_message(dovecot: Dovecot,
                                            dovecot_proxy: RunningProxy) -> None:
    """Pipelined DELE, then EOF from the client without QUIT: nothing is committed."""
    dovecot.reset_mailbox("dele")
    before = _direct_stat(dovecot, "dele")
    with RawPOP3(dovecot_proxy.port) as c:
        c.send_and_shutdown(b"USER dele\r\nPASS delepw\r\nDELE 1\r\nDELE 2\r\nSTAT\r\n")
        assert c.read_until_eof().startswith(b"+OK")
    _wait_sessions_gone(dovecot_proxy)
    assert _direct_stat(dovecot, "dele") == before


def test_half_closed_client_sees_the_quit_that_was_committed(
    dovecot: Dovecot, dovecot_proxy: RunningProxy
) -> None:
    """If the proxy relays a pipelined QUIT (deletions committed), the client must get its
    answer; otherwise it cannot know its messages are gone."""
    dovecot.reset_mailbox("dele")
    with RawPOP3(dovecot_proxy.port) as c:
        c.send_and_shutdown(b"USER dele\r\nPASS delepw\r\nDELE 1\r\nQUIT\r\n")
        answers = c.read_until_eof()
    _wait_sessions_gone(dovecot_proxy)
    deleted = _direct_stat(dovecot, "dele").startswith(b"+OK 2 ")
    quit_seen = answers.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].startswith(b"+OK Logging out")
    assert (deleted, quit_seen) in ((True, True), (False, False)), answers


def test_dele_then_quit_deletes_message(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    """Positive control for the test above: with QUIT the deletion is committed."""
    dovecot.reset_mailbox("dele")
    messages = dovecot.users["dele"].messages
    with RawPOP3(dovecot_proxy.port) as c:
        c.login("dele", "delepw")
        uidl_before = c.command("UIDL").split(b"\r\n")
        assert c.command("DELE 1").startswith(b"+OK")
        assert c.command("QUIT").startswith(b"+OK")
        assert c.read_until_eof() == b""
    with RawPOP3(dovecot.port) as c:
        c.login("dele", "delepw")
        assert c.command("STAT") == b"+OK 2 %d\r\n" % sum(m.octets for m in messages[1:])
        uidl_after = c.command("UIDL").split(b"\r\n")
        # The remaining messages keep their UIDs, renumbered from 1.
        assert [u.split(b" ")[1] for u in uidl_after[1:3]] == [
            u.split(b" ")[1] for u in uidl_before[2:4]
        ]
        assert c.command("RETR 1").endswith(_stuffed(messages[1].wire))


def test_dele_rset_quit_keeps_message(dovecot: Dovecot, dovecot_proxy: RunningProxy) -> None:
    dovecot.reset_mailbox("dele")
    before = _direct_stat(dovecot, "dele")
    with RawPOP3(dovecot_proxy.port) as c:
        c.login("dele", "delepw")
        assert c.command("DELE 1").startswith(b"+OK")
        assert c.command("RETR 1").startswith(b"-ERR")  # marked as deleted
        assert c.command("RSET").startswith(b"+OK")
        assert c.command("QUIT").startswith(b"+OK")
    assert _direct_stat(dovecot, "dele") == before
