"""Hypothesis drives the fuzz harnesses (a few hundred examples each, part of the normal run).

Two kinds of input per target: hypothesis-native strategies (good shrinking on raw bytes and
chunkings) and the seeded structure-aware generators of ``harness.py`` (valid protocol
exchanges, valid PROXY headers and MIME messages, then mutated), drawn through
``st.randoms`` so hypothesis still controls and replays them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popproxy.pop3.events import Command
from tests.fuzz.harness import (
    CLIENT_PIECES,
    PROXY_TOKENS,
    SERVER_PIECES,
    VERBS,
    CommandCase,
    Eof,
    FramerOp,
    ProxyCase,
    Receive,
    SendCommand,
    check_commands,
    check_framer,
    check_proxy,
    check_scan,
    gen_commands,
    gen_framer,
    gen_message,
    gen_proxy,
)

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCAN = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fragments(parts: Sequence[bytes], max_size: int = 30) -> st.SearchStrategy[bytes]:
    piece = st.one_of(st.sampled_from(list(parts)), st.binary(min_size=1, max_size=12))
    return st.lists(piece, max_size=max_size).map(b"".join)


cuts = st.lists(st.integers(min_value=0, max_value=20_000), max_size=12).map(tuple)
seeded = st.randoms(use_true_random=False)

command_cases = st.builds(
    CommandCase,
    data=st.one_of(fragments(CLIENT_PIECES), st.binary(max_size=600)),
    cuts=cuts,
    toggles=st.frozensets(st.integers(min_value=0, max_value=30), max_size=4),
    eof=st.booleans(),
)

commands = st.builds(
    Command,
    st.sampled_from(VERBS),
    st.lists(st.sampled_from([b"1", b"2", b"PLAIN", b"LOGIN", b"x"]), max_size=2).map(tuple),
)
framer_ops: st.SearchStrategy[list[FramerOp]] = st.lists(
    st.one_of(
        commands.map(SendCommand),
        st.one_of(fragments(SERVER_PIECES, 8), st.binary(min_size=1, max_size=64)).map(Receive),
        st.just(Eof()),
    ),
    max_size=30,
)

proxy_cases = st.builds(
    ProxyCase,
    data=st.one_of(st.binary(max_size=200), fragments(PROXY_TOKENS, 12)),
    cuts=cuts,
    eof=st.booleans(),
)


@FAST
@given(case=command_cases)
def test_command_parser(case: CommandCase) -> None:
    check_commands(case)


@FAST
@given(rng=seeded)
def test_command_parser_structured(rng: random.Random) -> None:
    check_commands(gen_commands(rng))


@FAST
@given(ops=framer_ops)
def test_response_framer(ops: list[FramerOp]) -> None:
    check_framer(ops)


@FAST
@given(rng=seeded)
def test_response_framer_structured(rng: random.Random) -> None:
    check_framer(gen_framer(rng))


@FAST
@given(case=proxy_cases)
def test_proxy_header_parser(case: ProxyCase) -> None:
    check_proxy(case)


@FAST
@given(rng=seeded)
def test_proxy_header_parser_structured(rng: random.Random) -> None:
    check_proxy(gen_proxy(rng))


@SCAN
@given(message=st.one_of(st.binary(max_size=3000),
                         fragments([b"\r\n", b"Subject: ", b"Content-Type: text/html\r\n",
                                    b"<a href=\"http://", b"198.51.100.7", b"\">x</a>",
                                    b"--b\r\n", b"boundary=b", b"=?utf-8?q?", b"?="], 40)))
def test_scanner(message: bytes) -> None:
    check_scan(message)  # known bugs are returned (and pinned in test_scanner_regressions)


@SCAN
@given(rng=seeded)
def test_scanner_mutated_mime(rng: random.Random) -> None:
    check_scan(gen_message(rng))
