"""Bytes of evidence and of a whole cached verdict per message, measured on corpus messages.

    PYTHONPATH=$PWD python3 bench/evidence_size.py [--feed FILE] DIR...

For docs/scaling.md: scans each message (at most --limit per directory), prints the evidence
size (median, 90th/99th percentile, largest), how many hit MAX_EVIDENCE_BYTES (truncated), the
size of the whole cached entry as stored in Redis, and checks that re-scoring the evidence with
the same feeds gives the scan's own score, action and reasons (a mismatch is printed and exits 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from popproxy.proxy.verdict_cache import CachedVerdict, to_record
from popproxy.scan import Scanner
from popproxy.scan.settings import ScanSettings


def _percentile(values: list[int], share: float) -> int:
    return values[min(len(values) - 1, int(share * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--feed", type=Path, action="append", default=[])
    parser.add_argument("--limit", type=int, default=5000)
    args = parser.parse_args()
    scanner = Scanner(ScanSettings(feed_paths=tuple(args.feed)))
    evidence_sizes, entry_sizes, truncated, mismatches = [], [], 0, 0
    for directory in args.dirs:
        for path in sorted(directory.glob("*.eml"))[: args.limit]:
            verdict, kept = scanner.scan_evidence(path.read_bytes())
            if kept is None:
                continue
            evidence_sizes.append(kept.size())
            truncated += kept.truncated
            entry = CachedVerdict(verdict.action, verdict.score, verdict.reasons, 12345,
                                  1_800_000_000.0, "0123456789ab-0123456789ab",
                                  signals=tuple(s.name for s in verdict.signals), evidence=kept)
            entry_sizes.append(len(json.dumps(to_record(entry), separators=(",", ":"))))
            again = None if kept.truncated else scanner.rescore(kept)
            if again is not None and (again.score, again.action, again.reasons) != (
                    verdict.score, verdict.action, verdict.reasons):
                mismatches += 1
                print(f"{path}: scan {verdict.score} {verdict.action}, "
                      f"re-scored {again.score} {again.action}")
    for name, values in (("evidence", evidence_sizes), ("cached entry", entry_sizes)):
        values.sort()
        print(f"{name}: {len(values)} messages, median {statistics.median(values):.0f} B, "
              f"mean {statistics.mean(values):.0f} B, p90 {_percentile(values, 0.9)} B, "
              f"p99 {_percentile(values, 0.99)} B, max {values[-1]} B")
    print(f"truncated: {truncated}; re-score mismatches: {mismatches}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
