"""Fuzz targets: inputs (``*Case``), generators (``gen_*``) and invariants (``check_*``).

A ``check_*`` function raises ``AssertionError`` when an invariant is broken and lets any
unexpected exception escape; the exceptions a target may raise by contract (the POP3 core's
``ProtocolError`` family, ``ProxyProtocolError``) are caught inside it.  The scanner may raise
nothing at all, and an "unscanned (internal error)" verdict counts as a failure too: that is an
exception the scanner swallowed, which in production delivers a message unscanned.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import struct
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from popproxy.pop3 import limits
from popproxy.pop3.commands import CommandParser
from popproxy.pop3.errors import ProtocolError
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    BadLine,
    BodyData,
    ClientEvent,
    Command,
    ConnectionClosed,
    EndOfBody,
    SaslResponse,
    StatusLine,
)
from popproxy.pop3.framing import ResponseFramer, stuff_body
from popproxy.pop3.state import Event
from popproxy.scan import Action, Scanner, Verdict, apply_action
from popproxy.scan.headers import field_name, header_fields, split_message
from popproxy.scan.verdict import ACTIONS
from popproxy.wire import proxyproto
from popproxy.wire.proxyproto import ProxyHeader, ProxyHeaderParser, ProxyProtocolError

# --------------------------------------------------------------------------- chunking


def chunks(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (taken modulo its length + 1); no empty chunks."""
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _random_cuts(rng: random.Random, size: int) -> tuple[int, ...]:
    style = rng.random()
    if style < 0.2:
        return ()  # whole
    if style < 0.3 and size <= 2048:
        return tuple(range(1, size))  # a byte at a time
    return tuple(rng.randrange(size + 1) for _ in range(rng.randint(1, 12)))


# --------------------------------------------------------------------------- CommandParser


@dataclass(frozen=True)
class CommandCase:
    """Client bytes, where they are cut, after which events a SASL exchange starts or ends,
    and EOF."""

    data: bytes
    cuts: tuple[int, ...] = ()
    toggles: frozenset[int] = frozenset()
    eof: bool = True


CLIENT_PIECES: tuple[bytes, ...] = (
    b"\r\n", b"\n", b"\r", b"\0", b" ", b"  ", b"USER ", b"PASS ", b"user demo", b"PASS a b ",
    b"AUTH PLAIN", b"AUTH LOGIN ", b"AUTH", b"*", b"STLS", b"CAPA", b"QUIT", b"NOOP", b"retr 1",
    b"TOP 1 2", b"LIST 99999999999", b"DELE 0", b"APOP x y", b"XXXXX", b"\xc3\xa9", b"\xff",
    b"AHVzZXIAcGFzcw==", b"=", b"\t", b"\x7f", b"A" * 250, b"B" * 253, b"C" * 254, b"D" * 300,
    b"E" * 8189, b"F" * 8200,
)


def run_commands(case: CommandCase) -> list[ClientEvent]:
    """Every event the parser produces for ``case`` (NEED_DATA left out)."""
    parser = CommandParser()
    events: list[ClientEvent] = []

    def pull() -> None:
        for _ in range(len(case.data) + 2):
            event = parser.next_event()
            if event is NEED_DATA:
                # Whatever came in, less than one maximal line is held.
                assert parser.buffered() < parser.line_limit
                return
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return
            if len(events) - 1 in case.toggles:
                parser.session.apply(
                    Event.LOGIN_FAILED if parser.session.in_sasl else Event.SASL_STARTED)
        raise AssertionError("next_event produced more events than input lines")

    for chunk in chunks(case.data, case.cuts):
        parser.receive_data(chunk)
        pull()
    if case.eof:
        parser.receive_data(b"")
        pull()
        assert isinstance(events[-1], ConnectionClosed), events[-1:]
        assert parser.buffered() == 0
    return events


def _check_command(cmd: Command) -> None:
    assert 3 <= len(cmd.verb) <= 4 and cmd.verb.isascii() and cmd.verb.isalpha(), cmd
    assert cmd.verb == cmd.verb.upper(), cmd
    for arg in cmd.args:
        assert not any(c in arg for c in b"\0\r\n"), cmd
        # PASS takes the rest of the line (spaces included, possibly empty: "PASS " is then
        # refused by the session); other arguments are single non-empty words.
        assert cmd.verb == "PASS" or (arg and b" " not in arg), cmd
    wire = cmd.render()
    # What goes upstream is one canonical line.  (Over 255 by one octet is possible for a
    # bare-LF line of exactly 255 octets, re-serialised with CRLF: tested separately.)
    assert wire.endswith(b"\r\n") and wire.count(b"\n") == 1
    assert len(wire) <= limits.MAX_COMMAND_LINE + 1, len(wire)


def check_commands(case: CommandCase) -> None:
    """No exception at all; well-formed events; the chunking does not change them."""
    try:
        events = run_commands(case)
    except ProtocolError:
        return
    for i, event in enumerate(events):
        if isinstance(event, Command):
            _check_command(event)
        elif isinstance(event, SaslResponse):
            assert b"\n" not in event.data and len(event.data) < limits.MAX_SASL_LINE
        elif isinstance(event, BadCommand):
            assert isinstance(event.reason, BadLine)
        else:
            assert isinstance(event, ConnectionClosed) and i == len(events) - 1, events
    if case.cuts:
        assert run_commands(dataclasses.replace(case, cuts=())) == events


def gen_commands(rng: random.Random) -> CommandCase:
    parts: list[bytes] = []
    for _ in range(rng.randint(0, 24)):
        roll = rng.random()
        if roll < 0.7:
            parts.append(rng.choice(CLIENT_PIECES))
        elif roll < 0.9:
            parts.append(rng.randbytes(rng.randint(1, 12)))
        else:
            parts.append(bytes(rng.choice(b"AZaz09 .=+/") for _ in range(rng.randint(1, 300))))
    data = b"".join(parts)
    toggles = frozenset(rng.randrange(30) for _ in range(rng.randint(0, 4)))
    return CommandCase(data, _random_cuts(rng, len(data)), toggles, rng.random() < 0.7)


# --------------------------------------------------------------------------- ResponseFramer


@dataclass(frozen=True)
class SendCommand:
    cmd: Command


@dataclass(frozen=True)
class Receive:
    data: bytes


@dataclass(frozen=True)
class Eof:
    pass


FramerOp = SendCommand | Receive | Eof

VERBS = ("USER", "PASS", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET", "QUIT",
         "CAPA", "AUTH", "STLS", "APOP")
ARGS = (b"1", b"2", b"PLAIN", b"LOGIN", b"x", b"99", b"AHVAcA==")

SERVER_PIECES: tuple[bytes, ...] = (
    b"+OK", b"-ERR", b"+ ", b"+", b" ", b"\r\n", b"\n", b"\r", b".", b"..", b".\r\n",
    b"\r\n.\r\n", b"\r\n..\r\n", b"+OK\r\n", b"-ERR\r\n", b"+ \r\n", b"+OK 3 octets\r\n",
    b"hello", b"\0", b"\xff", b"x" * 505, b"y" * 520, b"z" * 8200, b"[SYS/TEMP]",
)


def _response(rng: random.Random, cmd: Command) -> bytes:
    """A well-formed answer to ``cmd`` (sometimes -ERR), to get deep into body states."""
    if rng.random() < 0.2:
        return b"-ERR no\r\n"
    multiline = cmd.verb in ("RETR", "TOP", "CAPA") or (
        cmd.verb in ("LIST", "UIDL", "AUTH") and not cmd.args)
    if not multiline:
        return b"+OK\r\n"
    body = b"".join(rng.choice((b".", b"..", b"\r\n", b"line", b"\r", b"\n", b".\r\n", b" "))
                    for _ in range(rng.randint(0, 30)))
    return b"+OK\r\n" + stuff_body(body)


def _command(rng: random.Random) -> Command:
    return Command(rng.choice(VERBS), tuple(rng.choice(ARGS) for _ in range(rng.randint(0, 2))))


def gen_framer(rng: random.Random) -> tuple[FramerOp, ...]:
    ops: list[FramerOp] = []
    wire = bytearray(b"+OK ready\r\n" if rng.random() < 0.8 else b"")
    for _ in range(rng.randint(0, 12)):
        roll = rng.random()
        if roll < 0.45:
            cmd = _command(rng)
            ops.append(SendCommand(cmd))
            wire += _response(rng, cmd)
        else:
            wire += b"".join(rng.choice(SERVER_PIECES) if rng.random() < 0.8
                             else rng.randbytes(rng.randint(1, 8))
                             for _ in range(rng.randint(1, 6)))
        if rng.random() < 0.4:
            ops.extend(Receive(c) for c in chunks(bytes(wire), _random_cuts(rng, len(wire))))
            wire.clear()
    ops.extend(Receive(c) for c in chunks(bytes(wire), _random_cuts(rng, len(wire))))
    if rng.random() < 0.5:
        ops.append(Eof())
    return tuple(ops)


def check_framer(ops: Sequence[FramerOp]) -> None:
    """Only ProtocolError escapes; events are well-formed, in a legal order, and relaying them
    reproduces the upstream's bytes exactly (a prefix of what was received)."""
    framer = ResponseFramer()
    received, relayed = bytearray(), bytearray()
    in_body = False
    status_lines = 0
    sent = 0

    def pull() -> None:
        nonlocal in_body, status_lines
        for _ in range(len(received) + 4):
            event = framer.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                assert not in_body
                return
            if isinstance(event, StatusLine):
                assert not in_body, "a status line inside a body"
                assert event.kind in ("+OK", "-ERR") and event.raw.startswith(
                    event.kind.encode()), event
                assert event.raw.endswith(b"\n") and event.raw.count(b"\n") == 1, event
                assert len(event.raw) <= limits.MAX_STATUS_LINE
                assert not event.multiline or event.kind == "+OK"
                status_lines += 1
                assert status_lines <= sent + 1, "more answers than commands"
                relayed.extend(event.raw)
                in_body = event.multiline
            elif isinstance(event, BodyData):
                assert in_body and event.data, event
                relayed.extend(event.data)
            else:
                assert isinstance(event, EndOfBody) and in_body, event
                relayed.extend(b".\r\n")
                in_body = False
            assert received.startswith(relayed), "relayed bytes differ from the upstream's"
        raise AssertionError("next_event looped without consuming input")

    try:
        for op in ops:
            if isinstance(op, SendCommand):
                assert framer.send_command(op.cmd) == op.cmd.render()
                sent += 1
            elif isinstance(op, Receive):
                received.extend(op.data)
                framer.receive_data(op.data)
                pull()
            else:
                framer.receive_data(b"")
                pull()
    except ProtocolError:
        pass


# --------------------------------------------------------------------------- PROXY header


@dataclass(frozen=True)
class ProxyCase:
    data: bytes
    cuts: tuple[int, ...] = ()
    eof: bool = True


Outcome = tuple[ProxyHeader, int] | type[ProxyProtocolError] | None


def run_proxy(case: ProxyCase) -> Outcome:
    """The decoded header and its size, the error class, or None (still incomplete)."""
    parser = ProxyHeaderParser()
    fed = 0
    try:
        for chunk in [*chunks(case.data, case.cuts), *([b""] if case.eof else [])]:
            parser.receive_data(chunk)
            fed += len(chunk)
            event = parser.next_event()
            if isinstance(event, ProxyHeader):
                rest = parser.remaining()
                size = fed - len(rest)
                assert case.data[size:fed] == rest  # exactly the bytes after the header
                assert parser.next_event() is event  # stable
                return event, size
    except ProxyProtocolError as exc:
        try:
            parser.next_event()
        except ProxyProtocolError as again:
            assert again is exc  # the same error on every later call
        else:
            raise AssertionError("the parser forgot its error") from None
        return type(exc)
    return None


def _check_header(header: ProxyHeader, size: int) -> None:
    assert header.version in (1, 2)
    limit = proxyproto.MAX_V1_HEADER if header.version == 1 else (
        proxyproto.V2_FIXED_HEADER + proxyproto.MAX_V2_PAYLOAD)
    assert 0 < size <= limit, (header, size)
    if header.command == "LOCAL":
        assert header.source is None and header.destination is None
        return
    assert header.command == "PROXY" and header.source and header.destination
    (src, sport), (dst, dport) = header.source, header.destination
    assert type(src) is type(dst) and isinstance(src, IPv4Address | IPv6Address)
    assert 0 <= sport <= 65535 and 0 <= dport <= 65535
    for tlv_type, value in header.tlvs:
        assert 0 <= tlv_type <= 255 and len(value) <= 65535


def check_proxy(case: ProxyCase) -> None:
    """Only ProxyProtocolError escapes; the chunking changes neither header nor acceptance."""
    outcome = run_proxy(case)
    if isinstance(outcome, tuple):
        _check_header(*outcome)
    if case.cuts:
        whole = run_proxy(dataclasses.replace(case, cuts=()))
        assert isinstance(whole, tuple) == isinstance(outcome, tuple), (outcome, whole)
        assert (whole is None) == (outcome is None), (outcome, whole)
        if isinstance(outcome, tuple):
            assert whole == outcome


def _v1(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return b"PROXY UNKNOWN" + rng.choice((b"", b" whatever 1 2")) + b"\r\n"

    def port() -> str:
        return str(rng.choice((0, 1, 80, 995, 65535, rng.randrange(65536))))

    if roll < 0.6:
        a, b = (str(IPv4Address(rng.getrandbits(32))) for _ in range(2))
        family = "TCP4"
    else:
        a, b = (str(IPv6Address(rng.getrandbits(128))) for _ in range(2))
        family = "TCP6"
    return f"PROXY {family} {a} {b} {port()} {port()}\r\n".encode()


def _tlv(tlv_type: int, value: bytes) -> bytes:
    return struct.pack("!BH", tlv_type, len(value)) + value


def _v2(rng: random.Random) -> bytes:
    command = rng.choice((0x20, 0x21))
    family = rng.choice((0x00, 0x11, 0x21, 0x12, 0x31))
    addresses = {0x11: 12, 0x21: 36, 0x12: 12, 0x31: 216}.get(family, 0)
    block = rng.randbytes(addresses)
    tlvs = b""
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice((proxyproto.PP2_TYPE_ALPN, proxyproto.PP2_TYPE_AUTHORITY,
                           proxyproto.PP2_TYPE_NOOP, proxyproto.PP2_TYPE_UNIQUE_ID,
                           proxyproto.PP2_TYPE_SSL, proxyproto.PP2_TYPE_NETNS, 0xE0))
        value = rng.randbytes(rng.choice((0, 1, 4, 5, 20, 128, 129)))
        if kind == proxyproto.PP2_TYPE_SSL and rng.random() < 0.7:
            value = bytes([1]) + bytes(4) + _tlv(0x21, b"TLSv1.3")
        tlvs += _tlv(kind, value)
    with_crc = rng.random() < 0.3
    payload = block + tlvs + (_tlv(proxyproto.PP2_TYPE_CRC32C, bytes(4)) if with_crc else b"")
    header = proxyproto.V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(payload))
    header += payload
    if with_crc:
        crc = proxyproto.crc32c(header)
        header = header[:-4] + struct.pack("!I", crc)
    return header


def _mutate(rng: random.Random, data: bytes, tokens: Sequence[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3, 8))):
        op = rng.random()
        pos = rng.randrange(len(out) + 1)
        if op < 0.3 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op < 0.5:
            out[pos:pos] = rng.choice(tokens)
        elif op < 0.65:
            del out[pos : pos + rng.randint(1, 16)]
        elif op < 0.75:
            del out[pos:]
        elif op < 0.85 and out:
            start = rng.randrange(len(out))
            out[pos:pos] = out[start : start + rng.randint(1, 64)]
        else:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(out)


PROXY_TOKENS = (b"\r\n", b"\r", b"\n", b" ", b"PROXY ", b"TCP4 ", b"TCP6 ", b"UNKNOWN",
                b"\x00", b"\xff\xff", b"::", b"0", b"65536", b"01", proxyproto.V2_SIGNATURE)


def gen_proxy(rng: random.Random) -> ProxyCase:
    roll = rng.random()
    if roll < 0.4:
        data = _v1(rng)
    elif roll < 0.8:
        data = _v2(rng)
    else:
        data = rng.choice((b"", b"PROX", proxyproto.V2_SIGNATURE[:7])) + rng.randbytes(
            rng.randint(0, 40))
    data = _mutate(rng, data, PROXY_TOKENS)
    if rng.random() < 0.5:
        data += rng.choice((b"USER demo\r\n", b"\x16\x03\x01\x02\x00", rng.randbytes(20)))
    return ProxyCase(data, _random_cuts(rng, len(data)), rng.random() < 0.8)


# --------------------------------------------------------------------------- scanner

_DATA = Path(__file__).resolve().parents[1] / "data" / "scan"
_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SCAN_ACTIONS: tuple[Action, ...] = ("tag", "defang", "quarantine")

MIME_TOKENS: tuple[bytes, ...] = (
    b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b"--", b"--b1", b"--b1--", b"\r\n--b1\r\n",
    b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n",
    b"Content-Type: multipart/alternative; boundary=b1\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: text/html; charset=\"utf-7\"\r\n",
    b"Content-Type: text/plain; charset=x-unknown\r\n",
    b"Content-Type: application/zip; name=\"a.zip\"\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%E2%80%AEtxt.exe\r\n",
    b"X-Popproxy-Verdict: pass\r\n", b"x-popproxy-reasons: none\r\n", b"Subject: =?utf-8?b?",
    b"=?utf-8?q?=E2=80=AE?=", b"?=", b"From: \"PayPal\" <x@evil.test>\r\n", b"=\r\n", b"=3D",
    b"<a href=\"", b"\">", b"</a>", b"<form action=", b"<input type=password>", b"<base href=",
    b"http://", b"https://", b"hxxp://", b"[.]", b"xn--", b"xn--pypal-4ve.com", b"%2e", b"@",
    b"198.51.100.7", b"0x7f.1", b"3325256711", b"javascript:", b"data:text/html,",
    b"\xe2\x80\xae", b"\xd0\xb0", b"\x00", b"\xff\xfe", b"PK\x03\x04", b"MZ\x90\x00",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"begin 644 a.exe\r\n", b"\t", b" ",
)


def _build_seeds() -> list[bytes]:
    from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES
    from tests.integration.mailboxes import users
    from tests.scan.helpers import build

    seeds = [p.read_bytes() for p in sorted(_DATA.glob("*.eml"))]
    seeds += list(SAMPLE_MESSAGES)
    seeds += [m.wire for u in users() for m in u.messages if len(m.data) < 100_000]
    seeds += [
        build(text="Visit https://www.example.com/ or http://198.51.100.7/x today"),
        build(html='<a href="http://evil.test/">https://www.paypal.com/</a><form action='
                   '"http://203.0.113.9/"><input type="password"></form>', subject="Verify"),
        build(text="see attached", attachments=(("invoice.pdf.exe", b"MZ" + bytes(100),
                                                 "application/octet-stream"),
                                                ("page.html", b"<form action=x>",
                                                 "text/html"))),
        b"",
        b"no headers at all\r\n",
    ]
    for kind in ("phish", "ham"):  # the shared corpus, where checked out next to the repo
        if (_CORPUS / kind).is_dir():
            small = [p for p in sorted((_CORPUS / kind).iterdir())
                     if p.is_file() and p.stat().st_size < 5_000]
            seeds += [p.read_bytes() for p in small[:40]]
    return seeds


@lru_cache(maxsize=1)
def seeds() -> tuple[bytes, ...]:
    """Valid (or nearly valid) messages to mutate."""
    return tuple(_build_seeds())


def gen_message(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(0, 2000))
    pool = seeds()
    message = rng.choice(pool)
    if roll < 0.2:  # splice two messages
        other = rng.choice(pool)
        message = message[: rng.randrange(len(message) + 1)] + other[
            rng.randrange(len(other) + 1):]
    return _mutate(rng, message, MIME_TOKENS)


@lru_cache(maxsize=1)
def scanner() -> Scanner:
    return Scanner(feeds=())


def _own_verdict_fields(output: bytes) -> list[bytes]:
    """The X-Popproxy-Verdict fields of the header block (folded lines belong to a field)."""
    head, _, _ = split_message(output)
    return [f for f in header_fields(head) if field_name(f) == b"x-popproxy-verdict"]


# Known scanner bugs, each pinned by a strict xfail in test_regressions.py: the fuzzers count
# them apart, so that only a *new* kind of failure fails a run.  Keyed by the exception type and
# the innermost popproxy function it came from.  When a bug is fixed its xfail turns into XPASS
# (strict: a failure): delete the xfail and the entry here.  (The four action crashes of the 1M
# run are fixed; their reproducers in test_regressions.py are plain regression tests now.)
KNOWN_SCANNER_BUGS: dict[tuple[str, str], str] = {}


class ScannerFailure(AssertionError):
    """An exception inside the scanner or an action that is not a known bug."""


def _classify(exc: BaseException) -> str:
    """The known bug ``exc`` is, or raise ``ScannerFailure`` with its traceback."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "popproxy" in f.filename]
    where = frames[-1].name if frames else "?"
    known = KNOWN_SCANNER_BUGS.get((type(exc).__name__, where))
    if known is None:
        text = "".join(traceback.format_exception(exc))
        raise ScannerFailure(f"{type(exc).__name__} in {where}:\n{text}") from exc
    return known


def check_scan(message: bytes) -> set[str]:
    """The scan never raises and never hides an internal error; the verdict is well-formed and
    consistent with the thresholds; every action renders deterministically (LIST == RETR), and
    tag/defang leave exactly one verdict header (forged ones are replaced).

    Returns the known bugs (``KNOWN_SCANNER_BUGS``) the message hit; raises on anything else.
    """
    engine = scanner()
    hit: set[str] = set()
    verdict = engine.scan(message)
    assert isinstance(verdict, Verdict)
    if verdict.cause == "error":  # swallowed by Scanner.scan: find out what it was
        try:
            verdict = engine._scan(message, math.inf)
        except Exception as exc:
            hit.add(_classify(exc))
            return hit
        raise AssertionError(f"internal error not reproducible: {verdict}")
    assert verdict.action in ACTIONS
    assert math.isfinite(verdict.score) and verdict.score >= 0, verdict
    assert all(isinstance(r, str) and "\r" not in r and "\n" not in r for r in verdict.reasons)
    if verdict.action == "unscanned":
        assert verdict.cause in ("too-large", "time-budget"), verdict
        return hit
    assert verdict.cause is None
    expected = engine.config.thresholds.action_for(verdict.score)
    forced = {s.name for s in verdict.signals} & {"spoofed-verdict-header"}
    assert verdict.action == expected or (expected == "pass" and forced
                                          and verdict.action == "tag"), verdict
    for action in SCAN_ACTIONS:
        judged = dataclasses.replace(verdict, action=action)
        try:
            first = apply_action(message, judged, engine.config, quarantine_id="0" * 16,
                                 clock=lambda: 1e9)
        except Exception as exc:
            hit.add(_classify(exc))
            continue
        again = apply_action(message, judged, engine.config, quarantine_id="0" * 16,
                             clock=lambda: 1e9)
        assert first == again, f"{action} is not deterministic"
        if action != "quarantine":
            fields = _own_verdict_fields(first)
            assert len(fields) == 1 and fields[0].startswith(
                f"X-Popproxy-Verdict: {action}".encode()), (action, fields)
        if action == "defang":  # re-serialised by us: CRLF lines only, whatever came in
            bare = first.replace(b"\r\n", b"")
            assert b"\r" not in bare and b"\n" not in bare, "defang left a bare CR or LF"
    return hit


# --------------------------------------------------------------------------- registry

Target = tuple[Callable[[random.Random], object], Callable[[object], object]]


def _commands(case: object) -> None:
    assert isinstance(case, CommandCase)
    check_commands(case)


def _framer(ops: object) -> None:
    assert isinstance(ops, tuple)
    check_framer(ops)


def _proxy(case: object) -> None:
    assert isinstance(case, ProxyCase)
    check_proxy(case)


def _scan(message: object) -> set[str]:
    assert isinstance(message, bytes)
    return check_scan(message)


TARGETS: dict[str, Target] = {
    "commands": (gen_commands, _commands),
    "framer": (gen_framer, _framer),
    "proxyproto": (gen_proxy, _proxy),
    "scanner": (gen_message, _scan),
}


def rng_for(target: str, index: int) -> random.Random:
    """The generator of input ``index`` of ``target`` (so any failure can be replayed)."""
    return random.Random(f"{target}:{index}")
