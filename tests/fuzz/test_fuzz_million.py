"""A million generated inputs across the four fuzz targets (``-m slow``, about 5-8 minutes).

Inputs come from the seeded generators of ``harness.py`` (input ``i`` of target ``t`` is
``gen(rng_for(t, i))``, so a failure is replayed from its index alone) and run in one worker
process per CPU.  Zero exceptions may escape the parsers outside their ProtocolError family,
and zero from the scanner apart from the known bugs pinned in ``test_regressions.py`` (counted
and printed, they do not fail this run; a new kind of failure does).

Environment: ``POPPROXY_FUZZ_INPUTS`` scales the total (default 1,000,000),
``POPPROXY_FUZZ_SECONDS`` bounds the wall time (default 570; a run cut short by it passes
with a warning naming the count reached).
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import pytest

from tests.fuzz.harness import TARGETS, rng_for

TOTAL = int(os.environ.get("POPPROXY_FUZZ_INPUTS", "1000000"))
SECONDS = float(os.environ.get("POPPROXY_FUZZ_SECONDS", "570"))
# Shares of the total, by cost: the parsers take tens of microseconds an input, the scanner
# (scan + tag + defang + quarantine, each rendered twice) a few milliseconds.
SHARES = {"commands": 0.50, "framer": 0.25, "proxyproto": 0.21, "scanner": 0.04}
BLOCK = 2000


@dataclass
class BlockResult:
    target: str
    done: int = 0
    known: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[int, str]] = field(default_factory=list)


def run_block(target: str, start: int, stop: int, deadline: float) -> BlockResult:
    """Inputs ``start`` to ``stop`` of ``target`` (in a worker process)."""
    gen, check = TARGETS[target]
    result = BlockResult(target)
    for index in range(start, stop):
        if index % 100 == 0 and time.time() > deadline:
            break
        try:
            outcome = check(gen(rng_for(target, index)))
        except Exception:
            if len(result.failures) < 5:
                result.failures.append((index, traceback.format_exc()[-3000:]))
            else:
                result.failures.append((index, ""))
        else:
            if isinstance(outcome, set):
                result.known.update(outcome)
        result.done += 1
    return result


@pytest.mark.slow
def test_a_million_fuzz_inputs() -> None:
    counts = {t: int(TOTAL * share) for t, share in SHARES.items()}
    counts["commands"] += TOTAL - sum(counts.values())
    blocks = [(t, start, min(start + BLOCK, n)) for t, n in counts.items()
              for start in range(0, n, BLOCK)]
    blocks.sort(key=lambda b: b[1])  # interleave the targets
    started = time.time()
    deadline = started + SECONDS
    totals: dict[str, BlockResult] = {t: BlockResult(t) for t in counts}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(os.cpu_count() or 2, mp_context=context) as pool:
        futures = [pool.submit(run_block, *block, deadline) for block in blocks]
        for future in futures:
            part = future.result()
            total = totals[part.target]
            total.done += part.done
            total.known.update(part.known)
            total.failures.extend(part.failures)
    elapsed = time.time() - started
    done = sum(t.done for t in totals.values())
    print(f"\nfuzz: {done:,} inputs in {elapsed:.0f} s")
    for name, total in totals.items():
        known = ", ".join(f"{k} x{n}" for k, n in sorted(total.known.items())) or "none"
        print(f"  {name}: {total.done:,} inputs, {len(total.failures)} failures, "
              f"known scanner bugs hit: {known}")
    failures = [(name, index, text) for name, total in totals.items()
                for index, text in total.failures]
    assert not failures, "\n".join(f"{name} input {index}:\n{text}"
                                   for name, index, text in failures[:5])
    if done < TOTAL:  # a slow or busy machine: what ran is still checked, but say so
        warnings.warn(f"fuzz: only {done:,} of {TOTAL:,} inputs within {SECONDS:.0f} s",
                      stacklevel=1)
