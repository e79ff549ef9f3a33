"""The tnetstring writer against encodings produced by mitmproxy 11.0.2's own
``mitmproxy.io.tnetstring.dumps`` (recorded once in a separate venv, see docs/capture.md)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popproxy.capture import tnetstring

# (value, what mitmproxy 11.0.2 writes for it); tuples come back as lists.
KNOWN_GOOD: list[tuple[tnetstring.Value, bytes]] = [
    (None, b"0:~"),
    (True, b"4:true!"),
    (False, b"5:false!"),
    (12345, b"5:12345#"),
    (-7, b"2:-7#"),
    (2.5, b"3:2.5^"),
    (b"+OK hi\r\n", b"8:+OK hi\r\n,"),
    ("\u00e9", b"2:\xc3\xa9;"),
    ([12345, True, 0], b"19:5:12345#4:true!1:0#]"),
    ([False, b"+OK hi\r\n", 2.0], b"25:5:false!8:+OK hi\r\n,3:2.0^]"),
    (("127.0.0.1", 5000), b"19:9:127.0.0.1;4:5000#]"),
    ({"a": [1, 2.5, b"x", "y", None, True, False, (3,)]},
     b"51:1:a;43:1:1#3:2.5^1:x,1:y;0:~4:true!5:false!4:1:3#]]}"),
]


def _listed(value: tnetstring.Value) -> tnetstring.Value:
    """``value`` with tuples as lists (what a reader returns)."""
    if isinstance(value, tuple | list):
        return [_listed(v) for v in value]
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("value", "encoded"), KNOWN_GOOD)
def test_encoding_matches_mitmproxy(value: tnetstring.Value, encoded: bytes) -> None:
    assert tnetstring.dumps(value) == encoded
    assert tnetstring.loads(encoded) == _listed(value)


def test_dict_items_in_any_order() -> None:
    # mitmproxy writes the items of a dictionary last to first; readers do not care.
    assert tnetstring.loads(b"16:1:n;0:~1:k;2:\xc3\xa9;}") == {"k": "\u00e9", "n": None}
    assert tnetstring.loads(tnetstring.dumps({"k": "\u00e9", "n": None})) == {
        "n": None, "k": "\u00e9"}


def test_refuses_what_mitmproxy_could_not_read() -> None:
    with pytest.raises(TypeError):
        tnetstring.dumps({b"bytes key": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        tnetstring.dumps(math.nan)
    with pytest.raises(TypeError):
        tnetstring.dumps(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"", b"3:ab,", b"x:~", b"01:a,", b"1:a", b"2:ab?",
                                 b"4:maybe!", b"0:~trailing", b"6:1:a;0:~}extra",
                                 b"4:1:a;}", b"6:1:1#1:1#}"])
def test_loads_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(ValueError):
        tnetstring.loads(bad)


_scalars = (st.none() | st.booleans() | st.integers() | st.binary(max_size=20)
            | st.text(max_size=10) | st.floats(allow_nan=False, allow_infinity=False))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=20,
)


@given(_values)
def test_round_trip(value: tnetstring.Value) -> None:
    assert tnetstring.loads(tnetstring.dumps(value)) == value  # repr() round-trips floats
