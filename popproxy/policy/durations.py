"""Durations as an admin writes them: ``30d``, ``12h``, ``15m``, ``90s``, ``2w`` or seconds.

Used by ``scan.quarantine_retention`` and ``popproxy quarantine purge --older-than`` (issue 19
item 10), so the policy and the command read the same way.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError naming the value and the accepted forms."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number with s, m, h, d or w "
                         "(e.g. 30d, 12h), or seconds")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


def _coerce(value: object) -> object:
    return parse_duration(value) if isinstance(value, str) else value


# A policy duration: "30d" or a number of seconds.
Duration = Annotated[float, BeforeValidator(_coerce), Field(gt=0)]
