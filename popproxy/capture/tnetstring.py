"""Typed netstrings, the encoding of mitmproxy's flow files (sans-io, no dependencies).

A value is ``LENGTH ":" PAYLOAD TAG`` where LENGTH is the decimal byte count of PAYLOAD and TAG
gives the type (https://tnetstrings.info/ plus mitmproxy's ``;`` for UTF-8 text):

=====  ==================================================  ===========================
tag    payload                                             Python
=====  ==================================================  ===========================
``,``  raw bytes                                           ``bytes``
``;``  UTF-8 text (mitmproxy extension)                    ``str``
``#``  decimal integer                                     ``int``
``^``  ``repr()`` of a float                               ``float``
``!``  ``true`` or ``false``                               ``bool``
``~``  empty                                               ``None``
``]``  the items, each a tnetstring                        ``list`` (also from tuples)
``}``  key, value, key, value ... (keys are text here)     ``dict``
=====  ==================================================  ===========================

mitmproxy's reader needs dictionary keys and flow fields such as ``type`` as text (``;``), and
message contents as bytes (``,``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

Value: TypeAlias = (
    "bool | int | float | bytes | str | Sequence[Value] | Mapping[str, Value] | None"
)

# The reader refuses longer length prefixes (mitmproxy reads at most 12 digits).
MAX_LENGTH_DIGITS = 12


def dumps(value: Value) -> bytes:
    """The tnetstring encoding of ``value``."""
    out: list[bytes] = []
    _dump(value, out)
    return b"".join(out)


def _frame(payload: bytes, tag: bytes, out: list[bytes]) -> None:
    out += (str(len(payload)).encode("ascii"), b":", payload, tag)


def _dump(value: Value, out: list[bytes]) -> None:
    # bool before int: True is an int in Python.
    if value is None:
        out.append(b"0:~")
    elif isinstance(value, bool):
        _frame(b"true" if value else b"false", b"!", out)
    elif isinstance(value, int):
        _frame(str(value).encode("ascii"), b"#", out)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"tnetstring floats must be finite, not {value!r}")
        _frame(repr(value).encode("ascii"), b"^", out)
    elif isinstance(value, bytes):
        _frame(value, b",", out)
    elif isinstance(value, str):
        _frame(value.encode("utf-8"), b";", out)
    elif isinstance(value, Mapping):
        _frame(_container(_dict_items(value)), b"}", out)
    elif isinstance(value, Sequence):
        _frame(_container(value), b"]", out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a tnetstring")


def _dict_items(mapping: Mapping[str, Value]) -> list[Value]:
    items: list[Value] = []
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"tnetstring dictionary keys must be str, not {type(key).__name__}")
        items += (key, item)
    return items


def _container(items: Sequence[Value]) -> bytes:
    parts: list[bytes] = []
    for item in items:
        _dump(item, parts)
    return b"".join(parts)


# ------------------------------------------------------------------------- reading (tests)
def loads(data: bytes) -> Value:
    """Decode exactly one tnetstring (for tests and self-checks; the writer needs no reader)."""
    value, end = _parse(memoryview(data), 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes after the tnetstring")
    return value


def _parse(data: memoryview, start: int) -> tuple[Value, int]:
    """The value at ``start`` and the offset just after it."""
    colon = bytes(data[start : start + MAX_LENGTH_DIGITS + 1]).find(b":")
    digits = bytes(data[start : start + colon]) if colon > 0 else b""
    if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
        raise ValueError(f"bad tnetstring length prefix at offset {start}")
    begin = start + colon + 1
    end = begin + int(digits)
    if end >= len(data):
        raise ValueError(f"tnetstring at offset {start} runs past the end of the data")
    return _payload(data[begin:end], data[end : end + 1].tobytes()), end + 1


def _payload(payload: memoryview, tag: bytes) -> Value:
    raw = payload.tobytes()
    if tag == b",":
        return raw
    if tag == b";":
        return raw.decode("utf-8")
    if tag == b"#":
        return int(raw)
    if tag == b"^":
        return float(raw)
    if tag == b"!" and raw in (b"true", b"false"):
        return raw == b"true"
    if tag == b"~" and not raw:
        return None
    if tag == b"]":
        return _items(payload)
    if tag == b"}":
        items = _items(payload)
        if len(items) % 2:
            raise ValueError("tnetstring dictionary with a key but no value")
        return {_key(k): v for k, v in zip(items[::2], items[1::2], strict=True)}
    raise ValueError(f"bad tnetstring type tag {tag!r}")


def _items(payload: memoryview) -> list[Value]:
    items: list[Value] = []
    offset = 0
    while offset < len(payload):
        item, offset = _parse(payload, offset)
        items.append(item)
    return items


def _key(key: Value) -> str:
    if not isinstance(key, str):
        raise ValueError(f"tnetstring dictionary key is {type(key).__name__}, not text")
    return key
