"""Incremental parser for the lines a POP3 client sends (the proxy's server side).

Defined answers for odd input (each becomes one ``BadCommand`` event, the parser stays usable):

* a line longer than ``MAX_COMMAND_LINE`` (``MAX_SASL_LINE`` inside AUTH): ``TOO_LONG`` is
  reported as soon as the limit is passed and the rest of the line is drained without buffering;
* a NUL byte anywhere in the line: ``NUL_BYTE``;
* a keyword that is not 3 or 4 ASCII letters (RFC 1939 section 3): ``BAD_VERB``;
* an empty line: ``EMPTY``.

Line ends: CRLF (RFC 1939 section 3).  A bare LF also ends a line, as Dovecot and most servers
accept it from hand-typed sessions; this is safe because the upstream only ever receives the
command re-serialised by ``Command.render`` with CRLF, never the client's bytes.  A CR that is
not followed by LF stays part of the line and makes it malformed (``BAD_SYNTAX``).
"""

from __future__ import annotations

from popproxy.pop3 import limits
from popproxy.pop3.events import (
    NEED_DATA,
    BadCommand,
    BadLine,
    ClientEvent,
    Command,
    ConnectionClosed,
    Need,
    SaslResponse,
)
from popproxy.pop3.state import SessionState, State
from popproxy.pop3.verbs import VERBS

# The lower of the two line limits: a line within it is within either, so the state need not
# be asked which applies (most lines are short; asked for every line it was ~12 calls a login).
_WITHIN_ANY_LIMIT = min(limits.MAX_COMMAND_LINE, limits.MAX_SASL_LINE)

_NUL, _CR = b"\0\r"  # ints (see parse_command_line)

# Commands whose argument is the whole rest of the line (RFC 1939 section 7: a password may
# contain spaces; section 3 says arguments are separated by a single space otherwise).
_REST_OF_LINE_VERBS = frozenset(facts.name for facts in VERBS.values() if facts.rest_of_line)


def parse_command_line(line: bytes) -> Command | BadCommand:
    """Parse one command line (without its line end) into a ``Command`` or a ``BadCommand``."""
    if not line:
        return BadCommand(BadLine.EMPTY)
    # Ints, not b"\0": `bytes in bytes` first tries the needle as an int and formats the
    # TypeError it raises (~1,000 instructions per test, every command line).
    if _NUL in line:
        return BadCommand(BadLine.NUL_BYTE)
    if _CR in line:
        return BadCommand(BadLine.BAD_SYNTAX)
    keyword, sep, rest = line.partition(b" ")
    if not (3 <= len(keyword) <= 4 and keyword.isalpha() and keyword.isascii()):
        return BadCommand(BadLine.BAD_VERB)
    verb = keyword.decode("ascii").upper()
    if not sep:
        return Command(verb)
    if verb in _REST_OF_LINE_VERBS:
        return Command(verb, (rest,))
    args = tuple(rest.split(b" "))
    if b"" in args:  # doubled, leading or trailing spaces (no generator: every command line)
        return BadCommand(BadLine.BAD_SYNTAX)
    return Command(verb, args)


class CommandParser:
    """Owns the one receive buffer of the client direction.

    Feed bytes with ``receive_data`` (``b""`` means EOF), pull events with ``next_event``
    until it returns ``NEED_DATA``.  The session's state says how a line is read: inside an
    AUTH exchange (``State.AUTHORIZATION_SASL``) lines are raw SASL responses (RFC 5034
    section 4) with their own, larger limit; otherwise commands.
    """

    # Slots: one per connection lives as long as it does (idle memory per session).
    __slots__ = (
        "_bad_before_command", "_buf", "_draining", "_eof", "_scan_from", "_session", "bad_count"
    )

    def __init__(self, session: SessionState | None = None) -> None:
        """``session``: the state machine of the connection (a fresh one if not given)."""
        self._session = session if session is not None else SessionState()
        self._buf = bytearray()
        self._scan_from = 0  # bytes already searched for LF
        self._draining = False  # inside an over-long line: discard up to the next LF
        self._eof = False
        self.bad_count = 0  # consecutive BadCommand events (see limits.MAX_BAD_COMMANDS)
        self._bad_before_command = 0  # bad_count before the last Command reset it

    @property
    def session(self) -> SessionState:
        """The state machine this parser reads (it never changes the state itself)."""
        return self._session

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buf += data

    def buffered(self) -> int:
        """Bytes received but not yet turned into events (RFC 2595 STLS injection check)."""
        return len(self._buf)

    @property
    def line_limit(self) -> int:
        return limits.MAX_SASL_LINE if self._session.in_sasl else limits.MAX_COMMAND_LINE

    def next_event(self) -> ClientEvent | Need:
        while True:
            end = self._buf.find(b"\n", self._scan_from)
            if end < 0:
                if not self._buf and not self._eof:  # the usual case: every line was read
                    self._scan_from = 0
                    return NEED_DATA
                return self._no_line_yet()
            if self._draining:
                del self._buf[: end + 1]
                self._scan_from = 0
                self._draining = False
                continue
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            self._scan_from = 0
            # The limit counts the line end as CRLF, as the upstream will receive it.
            cr = line.endswith(b"\r")
            if len(line) + 2 > _WITHIN_ANY_LIMIT and len(line) + (1 if cr else 2) > self.line_limit:
                return self._bad(BadLine.TOO_LONG)
            return self._line_event(line[:-1] if cr else line)

    def _no_line_yet(self) -> ClientEvent | Need:
        if self._draining:
            self._buf.clear()
        elif len(self._buf) + 1 > _WITHIN_ANY_LIMIT and len(self._buf) + 1 > self.line_limit:
            # +1: CRLF cannot fit any more
            self._buf.clear()
            self._draining = True
            self._scan_from = 0
            return self._bad(BadLine.TOO_LONG)
        self._scan_from = len(self._buf)
        if self._eof:
            self._buf.clear()
            return ConnectionClosed()
        return NEED_DATA

    def _line_event(self, line: bytes) -> ClientEvent:
        if self._session.state is State.AUTHORIZATION_SASL:  # SessionState.in_sasl, inlined
            return SaslResponse(line)
        event = parse_command_line(line)
        if isinstance(event, BadCommand):
            return self._bad(event.reason)
        self._bad_before_command = self.bad_count
        self.bad_count = 0
        return event

    def refuse_last_command(self) -> None:
        """The caller refused the last ``Command`` (unknown verb, wrong state): count it."""
        self.bad_count = self._bad_before_command + 1
        self._bad_before_command = self.bad_count

    def _bad(self, reason: BadLine) -> BadCommand:

        self.bad_count += 1
        return BadCommand(reason)


# A message number or line count: RFC 1939 section 3 uses decimal numbers; ten digits hold any
# 32-bit count and keep absurd values away from legacy servers' integer parsing.
MAX_NUMBER_DIGITS = 10


def valid_transaction_args(cmd: Command) -> bool:
    """True if ``cmd`` has the right number of numeric arguments for the TRANSACTION state
    (``VerbFacts.args``, RFC 1939 sections 5 and 7)."""
    args = VERBS[cmd.verb].args
    if args is None:  # not a TRANSACTION verb: its arguments are not numbers
        return False
    low, high = args
    if not low <= len(cmd.args) <= high:
        return False
    # (STAT, UIDL, LIST, QUIT...: no arguments, no generator)
    return not cmd.args or all(a.isdigit() and len(a) <= MAX_NUMBER_DIGITS for a in cmd.args)
