"""Config error messages that name the value and the fix (issue 19 item 3).

pydantic's own messages say what is wrong in general ("Extra inputs are not permitted"); an
admin at 3 a.m. needs to know which value and what to write instead.  Three helpers:

- ``closest_key``: an unknown key gets the nearest valid key of the same section (difflib,
  like git's "did you mean"), or the list of valid keys when nothing is close;
- ``parse_network``: a CIDR with host bits set says which network was probably meant;
- ``describe``: one pydantic error as ``key: message (got VALUE)``; values of keys that may
  hold a secret (a Redis URL with its password) are never repeated.

Index style everywhere: ``listeners.1.port`` (the loader's key path), never ``listeners[1]``.
"""

from __future__ import annotations

import difflib
import ipaddress
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Location = tuple[str | int, ...]

# difflib's ratio above which a known key counts as the one that was meant: 0.6 is difflib's
# own default for get_close_matches (catches "prot"->"port", "limts"->"limits").
CLOSE_MATCH = 0.6
# Parts of a key name whose value may be a secret (redis://:PASSWORD@host): never echoed.
SECRET_WORDS = ("url", "password", "secret")
# A longer value is cut in the message: enough to recognise it, not a wall of text.
MAX_SHOWN = 80


def key_path(loc: Location) -> str:
    """``("listeners", 1, "port")`` -> ``listeners.1.port``: the one index style."""
    return ".".join(str(part) for part in loc) or "(top level)"


def _unwrap(annotation: Any, part: str | int) -> Any:
    """The annotation one step below ``annotation`` along ``part`` (None if unknown)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0], part)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    if origin is tuple and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(
            part, str):
        field = annotation.model_fields.get(part)
        return None if field is None else field.annotation
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated or origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model = _model_of(arg)
            if model is not None:
                return model
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def valid_keys(root: type[BaseModel], section: Location) -> list[str]:
    """The keys the model at ``section`` (a key path below ``root``) accepts."""
    annotation: Any = root
    for part in section:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return []
    model = _model_of(annotation)
    return list(model.model_fields) if model is not None else []


def closest_key(root: type[BaseModel], loc: Location) -> str:
    """The fix for the unknown key at ``loc``: the closest valid key, or the valid keys."""
    bad, section = str(loc[-1]), loc[:-1]
    keys = valid_keys(root, section)
    if not keys:
        return "unknown key"
    close = difflib.get_close_matches(bad, keys, n=1, cutoff=CLOSE_MATCH)
    if close:
        return f"unknown key, did you mean {close[0]!r}?"
    return "unknown key; valid keys here: " + ", ".join(keys)


def parse_network(value: object) -> object:
    """Before pydantic's network check: a string that is not a network says why, by value.

    ``10.0.0.1/24`` is refused like ``ipaddress`` does (strict): a rule written with a host
    address usually means the host's network, but guessing would silently widen it.
    """
    if not isinstance(value, str):
        return value
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value}: not an IP network ({exc}); write e.g. 192.0.2.0/24, "
                             "192.0.2.7 or 2001:db8::/32") from None
        raise ValueError(f"{value}: host bits set, did you mean {loose}") from None


def _shown(error: ErrorDetails) -> str:
    """`` (got VALUE)`` for a scalar input whose key cannot hold a secret, else nothing."""
    value = error.get("input")
    key = " ".join(str(part) for part in error["loc"]).lower()
    if any(word in key for word in SECRET_WORDS):
        return ""
    if isinstance(value, bool | int | float) or (isinstance(value, str) and value):
        text = repr(value) if isinstance(value, str) else str(value)
        return f" (got {text[:MAX_SHOWN]})"
    return ""


def describe(root: type[BaseModel], error: ErrorDetails) -> str:
    """One pydantic error as the message after ``key:``, naming the value and the fix."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return closest_key(root, loc)
    message = error["msg"]
    if error["type"] == "value_error":
        # Our validators' own words already name the value; pydantic prefixes "Value error, ".
        return message.removeprefix("Value error, ")
    if error["type"] in ("tuple_type", "list_type", "set_type") and not isinstance(
            error.get("input"), list | tuple | dict):
        # "Input should be a valid tuple": YAML's words for it are a list, one item too.
        return f"a list is needed, e.g. [{_item(error)}] or one item per '- ' line" + \
            _shown(error)
    return message + _shown(error)


def _item(error: ErrorDetails) -> str:
    value = error.get("input")
    key = " ".join(str(part) for part in error["loc"]).lower()
    if isinstance(value, str) and value and not any(w in key for w in SECRET_WORDS):
        return value[:MAX_SHOWN]
    return "..."
