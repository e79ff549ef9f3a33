"""Ways to cut a byte string into the chunks a sans-io parser receives.

A parser's output must not depend on how its input was split into ``receive_data`` calls
(house rule 10), so protocol tests run every input through each ``Feed`` in ``FEEDS``: whole,
one byte at a time, and seeded random splits.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

Feed = Callable[[bytes], list[bytes]]
"""Splits a byte string into the chunks handed to ``receive_data`` (no empty chunks)."""

# Random chunks are 1..7 bytes: short enough that every POP3 line and header field is cut
# several times, at varying offsets.
RANDOM_MAX_CHUNK = 7


def whole(data: bytes) -> list[bytes]:
    return [data] if data else []


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_split(seed: int) -> Feed:
    """Chunks of 1..RANDOM_MAX_CHUNK bytes, reproducible from ``seed``."""

    def split(data: bytes) -> list[bytes]:
        rng = random.Random(seed)
        chunks, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, RANDOM_MAX_CHUNK)
            chunks.append(data[pos : pos + step])
            pos += step
        return chunks

    split.__name__ = f"random_split_{seed}"
    return split


def split_at(*positions: int) -> Feed:
    """Cut the data at the given offsets (out-of-range or repeated offsets are ignored)."""

    def split(data: bytes) -> list[bytes]:
        cuts = sorted({p for p in positions if 0 < p < len(data)})
        bounds = [0, *cuts, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    split.__name__ = "split_at_" + "_".join(map(str, positions))
    return split


FEEDS: list[Feed] = [whole, bytewise, random_split(1), random_split(2)]
FEED_IDS = ["whole", "bytewise", "random1", "random2"]
