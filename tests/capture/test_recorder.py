"""The session recorder: order, timestamps, RETR/TOP bodies omitted, memory bound.

The flow file it becomes is tested in test_flow.py.
"""

from __future__ import annotations

import pytest

from popproxy.capture.recorder import (
    MAX_CAPTURE_BYTES,
    MESSAGE_OVERHEAD,
    SessionRecorder,
)
from popproxy.pop3.framing import stuff_body

BODY = b"Subject: hi\r\n\r\n.dotted line\r\nsecret mail text\r\n"
WIRE = stuff_body(BODY)  # dot-stuffed, with the terminator


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def recorder(keep_bodies: bool = False, limit: int = MAX_CAPTURE_BYTES) -> SessionRecorder:
    return SessionRecorder(Clock(), keep_bodies, limit)


def contents(rec: SessionRecorder) -> list[tuple[bool, bytes]]:
    return [(m.from_client, m.content) for m in rec.messages]


def test_messages_in_order_with_timestamps_and_redaction() -> None:
    rec = recorder()
    rec.from_proxy(b"+OK POP3 proxy ready\r\n")
    rec.from_client(b"USER alice\r\nPASS hunter2\r\n", sasl=False)
    rec.from_proxy(b"+OK send PASS\r\n")
    rec.from_proxy(b"+OK logged in\r\n")
    rec.from_client(b"STA", sasl=False)  # held until the line is complete
    rec.from_client(b"T\r\n", sasl=False)
    rec.finish()
    assert contents(rec) == [
        (False, b"+OK POP3 proxy ready\r\n"),
        (True, b"USER alice\r\nPASS ***\r\n"),
        (False, b"+OK send PASS\r\n"),
        (False, b"+OK logged in\r\n"),
        (True, b"STAT\r\n"),
    ]
    stamps = [m.timestamp for m in rec.messages]
    assert stamps == sorted(stamps) and rec.started < stamps[0] < (rec.ended or 0)


@pytest.mark.parametrize("verb", ["RETR", "TOP"])
def test_body_omitted_in_chunks(verb: str) -> None:
    rec = recorder()
    with rec.reply(verb):
        rec.from_proxy(b"+OK %d octets\r\n" % len(BODY))
        for i in range(0, len(WIRE) - 3, 7):  # the relay's chunks, then the terminator
            rec.from_proxy(WIRE[i : min(i + 7, len(WIRE) - 3)])
        rec.from_proxy(b".\r\n")
    assert contents(rec) == [
        (False, b"+OK %d octets\r\n" % len(BODY)),
        (False, b"[body of %d octets omitted]\r\n.\r\n" % (len(WIRE) - 3)),
    ]
    assert rec.bodies_omitted == 1


def test_body_omitted_when_written_with_its_status_line() -> None:
    rec = recorder()
    with rec.reply("RETR"):
        rec.from_proxy(b"+OK 42 octets\r\n" + WIRE)  # the scanning view writes it at once
    with rec.reply("TOP"):
        rec.from_proxy(b"+OK\r\n.\r\n")  # an empty body
    assert contents(rec) == [
        (False, b"+OK 42 octets\r\n"),
        (False, b"[body of %d octets omitted]\r\n.\r\n" % (len(WIRE) - 3)),
        (False, b"+OK\r\n"),
        (False, b"[body of 0 octets omitted]\r\n.\r\n"),
    ]
    assert b"secret mail text" not in b"".join(m.content for m in rec.messages)


def test_error_replies_and_other_commands_are_kept() -> None:
    rec = recorder()
    with rec.reply("RETR"):
        rec.from_proxy(b"-ERR no such message\r\n")
    with rec.reply("LIST"):
        rec.from_proxy(b"+OK 1 messages\r\n1 120\r\n.\r\n")
    assert contents(rec) == [(False, b"-ERR no such message\r\n"),
                             (False, b"+OK 1 messages\r\n1 120\r\n.\r\n")]
    assert rec.bodies_omitted == 0


def test_body_cut_short_by_an_error() -> None:
    rec = recorder()
    with pytest.raises(ConnectionError), rec.reply("RETR"):
        rec.from_proxy(b"+OK\r\n" + WIRE[:10])
        raise ConnectionError
    rec.from_proxy(b"-ERR [SYS/TEMP] upstream server unavailable, try again later\r\n")
    assert contents(rec)[1:] == [
        (False, b"[body of 10 octets omitted, reply cut short]\r\n"),
        (False, b"-ERR [SYS/TEMP] upstream server unavailable, try again later\r\n"),
    ]


def test_bodies_kept_on_request() -> None:
    rec = recorder(keep_bodies=True)
    with rec.reply("RETR"):
        rec.from_proxy(b"+OK\r\n")
        rec.from_proxy(WIRE)
    assert contents(rec) == [(False, b"+OK\r\n"), (False, WIRE)]


def test_memory_bound() -> None:
    limit = 3 * MESSAGE_OVERHEAD + 50
    rec = recorder(limit=limit)
    for _ in range(10):
        rec.from_proxy(b"x" * 20)
    assert rec.truncated
    assert rec.used <= limit
    kept = sum(len(m.content) for m in rec.messages)
    assert kept + rec.dropped == 200
    assert [len(m.content) for m in rec.messages] == [20, 20, 10]
