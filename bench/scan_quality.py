#!/usr/bin/env python3
"""Scanner quality and speed over the shared evaluation corpus.

Reports, with and without the blocklist feed: detection (share of phish/ flagged) and false
positives (share of ham/ flagged), combined and per signal, on three splits of the corpus:
``tune`` (even-numbered files, the only ones looked at while choosing weights), ``held-out``
(odd-numbered files) and ``all``.  Then scanner throughput in messages/s on one core.

The corpus is read in place (CORPUS env, default ../shared/corpus next to the repository) and
never copied: it is licensed CC BY-NC.  Run: ``python bench/scan_quality.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Measure the scanner of the checkout this file sits in, not whichever copy an editable install
# happens to point at (sys.path[0] is bench/ when run as a script).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from popproxy.scan import ScanConfig, Scanner, Verdict, load_feeds  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
FEED_NAME = "feeds/openphish-hosts.txt"
SPLITS = ("tune", "held-out", "all")
FLAGGED_ACTIONS = ("tag", "defang", "quarantine")


@dataclass
class Sample:
    """One corpus message and its label."""

    name: str
    phish: bool
    number: int
    data: bytes


@dataclass
class Tally:
    """Counts for one split and one scanner setting."""

    phish: int = 0
    ham: int = 0
    phish_flagged: int = 0
    ham_flagged: int = 0
    unscanned: int = 0
    phish_signals: Counter[str] = field(default_factory=Counter)
    ham_signals: Counter[str] = field(default_factory=Counter)

    def add(self, sample: Sample, verdict: Verdict) -> None:
        flagged = verdict.action in FLAGGED_ACTIONS
        self.unscanned += verdict.action == "unscanned"
        names = {s.name for s in verdict.signals}
        if sample.phish:
            self.phish += 1
            self.phish_flagged += flagged
            self.phish_signals.update(names)
        else:
            self.ham += 1
            self.ham_flagged += flagged
            self.ham_signals.update(names)


def load_corpus(root: Path) -> list[Sample]:
    """Every .eml under phish/ and ham/, with its number (for the even/odd split)."""
    samples = []
    for label in ("phish", "ham"):
        for path in sorted((root / label).glob("*.eml")):
            m = re.search(r"(\d+)\.eml$", path.name)
            number = int(m.group(1)) if m else 0
            samples.append(Sample(path.name, label == "phish", number, path.read_bytes()))
    return samples


def in_split(sample: Sample, split: str) -> bool:
    """tune = even-numbered files, held-out = odd-numbered, all = both."""
    if split == "tune":
        return sample.number % 2 == 0
    if split == "held-out":
        return sample.number % 2 == 1
    return True


# Messages scanned untimed first, so one-off costs (lazy imports, regex compilation) are not
# charged to the first timed messages.
WARM_UP = 20


def evaluate(samples: list[Sample], scanner: Scanner) -> tuple[dict[str, Tally], float]:
    """Scan every sample once; tallies per split and messages/s.

    Speed is messages per second of this process's CPU time (time.process_time), i.e. on one
    core, so other load on the machine does not distort it.
    """
    tallies = {split: Tally() for split in SPLITS}
    for sample in samples[:WARM_UP]:
        scanner.scan(sample.data)
    elapsed = 0.0
    for sample in samples:
        start = time.process_time()
        verdict = scanner.scan(sample.data)
        elapsed += time.process_time() - start
        for split in SPLITS:
            if in_split(sample, split):
                tallies[split].add(sample, verdict)
    return tallies, len(samples) / elapsed if elapsed else 0.0


def pct(n: int, d: int) -> str:
    """'93.2% (466/500)'."""
    return f"{100.0 * n / d:5.1f}% ({n}/{d})" if d else "  n/a"


def print_tables(results: dict[str, tuple[dict[str, Tally], float]]) -> None:
    """Human-readable tables: combined per split, then per signal on all."""
    print("## Combined (flagged = action tag, defang or quarantine)\n")
    print(f"| {'setting':<12} | {'split':<8} | {'detection':<20} | {'false positives':<20} |")
    print(f"|{'-' * 14}|{'-' * 10}|{'-' * 22}|{'-' * 22}|")
    for setting, (tallies, _) in results.items():
        for split in SPLITS:
            t = tallies[split]
            print(f"| {setting:<12} | {split:<8} | {pct(t.phish_flagged, t.phish):<20} "
                  f"| {pct(t.ham_flagged, t.ham):<20} |")
    for setting, (tallies, _) in results.items():
        t = tallies["all"]
        names = sorted(set(t.phish_signals) | set(t.ham_signals),
                       key=lambda n: (-t.phish_signals[n], n))
        print(f"\n## Per signal, {setting}, all files (share of messages where it fired)\n")
        print(f"| {'signal':<28} | {'phish':<18} | {'ham':<18} |")
        print(f"|{'-' * 30}|{'-' * 20}|{'-' * 20}|")
        for n in names:
            print(f"| {n:<28} | {pct(t.phish_signals[n], t.phish):<18} "
                  f"| {pct(t.ham_signals[n], t.ham):<18} |")
    print("\n## Throughput (CPU time of one core, scan only, files preloaded)\n")
    for setting, (tallies, rate) in results.items():
        print(f"- {setting}: {rate:.0f} messages/s; unscanned: {tallies['all'].unscanned}")


def as_json(results: dict[str, tuple[dict[str, Tally], float]]) -> dict[str, object]:
    """The same numbers as a JSON-able dict."""
    out: dict[str, object] = {}
    for setting, (tallies, rate) in results.items():
        out[setting] = {
            "messages_per_second": round(rate, 1),
            "splits": {
                split: {
                    "phish": t.phish, "phish_flagged": t.phish_flagged,
                    "ham": t.ham, "ham_flagged": t.ham_flagged, "unscanned": t.unscanned,
                }
                for split, t in tallies.items()
            },
            "signals_all": {
                "phish": dict(tallies["all"].phish_signals),
                "ham": dict(tallies["all"].ham_signals),
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 2 when the corpus is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    root = Path(os.environ.get("CORPUS", DEFAULT_CORPUS))
    if not (root / "phish").is_dir() or not (root / "ham").is_dir():
        print(f"corpus not found at {root} (set CORPUS)", file=sys.stderr)
        return 2
    samples = load_corpus(root)
    feed_path = root / FEED_NAME
    settings = {"no feed": Scanner(ScanConfig(), feeds=())}
    if feed_path.is_file():
        settings["with feed"] = Scanner(ScanConfig(), feeds=load_feeds([feed_path]))
    results = {name: evaluate(samples, scanner) for name, scanner in settings.items()}
    if args.json:
        print(json.dumps(as_json(results), indent=2))
    else:
        print_tables(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
