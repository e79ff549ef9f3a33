#!/usr/bin/env python3
"""Scanner quality and speed over the shared evaluation corpus, split by time.

Phishing comes in campaigns of near-copies, so a random or even/odd split measures memory of
campaigns.  Like ``../shared/corpus/evaluate.py`` this splits phish/ and phish-pool/ by sample
number (the honeypot numbers samples in the order they arrived; phish/MANIFEST.json gives the
numbers of phish/): ``tune`` is samples below SPLIT (the only phishing looked at while choosing
weights), ``validate`` the newer ones (report, never tune on it).  False positives are given for
ham/ (2002) and ham-modern/ (2019-2026) separately.  Per-signal counts are printed for the sets
one may tune on (tune, ham, ham-modern) only.  Then throughput in messages/s on one core.

Everything is reported without and with the blocklist feed (the feed snapshot is newer than
every message, so the feed figures flatter).  The corpus is read in place (CORPUS env, default
../shared/corpus next to the repository) and never copied: it is licensed CC BY-NC.
Run: ``python bench/scan_quality.py [--json] [--split 3600]``.
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
# evaluate.py's default: samples 3600 and up (late 2023 - early 2024) are the validation set.
SPLIT = 3600
SETS = ("tune", "validate", "ham", "ham-modern")
TUNABLE = ("tune", "ham", "ham-modern")  # per-signal counts only where tuning may look
FLAGGED_ACTIONS = ("tag", "defang", "quarantine")


@dataclass
class Sample:
    """One corpus message and the set it belongs to."""

    name: str
    group: str
    data: bytes


@dataclass
class Tally:
    """Counts for one set and one scanner setting."""

    messages: int = 0
    flagged: int = 0
    unscanned: int = 0
    signals: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict) -> None:
        self.messages += 1
        self.flagged += verdict.action in FLAGGED_ACTIONS
        self.unscanned += verdict.action == "unscanned"
        self.signals.update({s.name for s in verdict.signals})


def phish_numbers(root: Path) -> dict[Path, int]:
    """Every phishing file with its sample number (phish/ from its manifest, pool from names)."""
    manifest = json.loads((root / "phish" / "MANIFEST.json").read_text())
    numbers = {root / "phish" / f["file"]: int(f["sample"]) for f in manifest["files"]}
    for path in (root / "phish-pool").glob("pot_*.eml"):
        m = re.search(r"(\d+)", path.stem)
        if m:
            numbers[path] = int(m.group(1))
    return numbers


def load_corpus(root: Path, split: int) -> list[Sample]:
    """All samples, grouped into SETS."""
    samples = [
        Sample(path.name, "tune" if number < split else "validate", path.read_bytes())
        for path, number in sorted(phish_numbers(root).items(), key=lambda item: item[1])
    ]
    for group in ("ham", "ham-modern"):
        samples.extend(
            Sample(path.name, group, path.read_bytes())
            for path in sorted((root / group).glob("*.eml"))
        )
    return samples


# Messages scanned untimed first, so one-off costs (lazy imports, regex compilation) are not
# charged to the first timed messages.
WARM_UP = 20


def evaluate(samples: list[Sample], scanner: Scanner) -> tuple[dict[str, Tally], float]:
    """Scan every sample once; tallies per set and messages/s.

    Speed is messages per second of this process's CPU time (time.process_time), i.e. on one
    core, so other load on the machine does not distort it.
    """
    tallies = {name: Tally() for name in SETS}
    for sample in samples[:WARM_UP]:
        scanner.scan(sample.data)
    elapsed = 0.0
    for sample in samples:
        start = time.process_time()
        verdict = scanner.scan(sample.data)
        elapsed += time.process_time() - start
        tallies[sample.group].add(verdict)
    return tallies, len(samples) / elapsed if elapsed else 0.0


def pct(n: int, d: int) -> str:
    """'53.8% (1838/3416)'."""
    return f"{100.0 * n / d:5.1f}% ({n}/{d})" if d else "  n/a"


Results = dict[str, tuple[dict[str, Tally], float]]


def print_tables(results: Results, split: int) -> None:
    """Human-readable tables: flagged per set, per signal on the tunable sets, throughput."""
    print(f"## Flagged (action tag, defang or quarantine); split at sample {split}\n")
    print(f"| {'setting':<10} | {'tune phish':<20} | {'validate phish':<20} "
          f"| {'ham (FP)':<16} | {'ham-modern (FP)':<16} |")
    print(f"|{'-' * 12}|{'-' * 22}|{'-' * 22}|{'-' * 18}|{'-' * 18}|")
    for setting, (tallies, _) in results.items():
        cells = [pct(tallies[name].flagged, tallies[name].messages) for name in SETS]
        print(f"| {setting:<10} | {cells[0]:<20} | {cells[1]:<20} | {cells[2]:<16} "
              f"| {cells[3]:<16} |")
    for setting, (tallies, _) in results.items():
        names = sorted(set().union(*(tallies[s].signals for s in TUNABLE)),
                       key=lambda n: (-tallies["tune"].signals[n], n))
        print(f"\n## Per signal, {setting} (share of messages where it fired; tunable sets)\n")
        print(f"| {'signal':<28} | {'tune phish':<20} | {'ham':<16} | {'ham-modern':<16} |")
        print(f"|{'-' * 30}|{'-' * 22}|{'-' * 18}|{'-' * 18}|")
        for n in names:
            cells = [pct(tallies[s].signals[n], tallies[s].messages) for s in TUNABLE]
            print(f"| {n:<28} | {cells[0]:<20} | {cells[1]:<16} | {cells[2]:<16} |")
    print("\n## Throughput (CPU time of one core, scan only, files preloaded)\n")
    for setting, (tallies, rate) in results.items():
        unscanned = sum(t.unscanned for t in tallies.values())
        print(f"- {setting}: {rate:.0f} messages/s; unscanned: {unscanned}")


def as_json(results: Results, split: int) -> dict[str, object]:
    """The same numbers as a JSON-able dict."""
    out: dict[str, object] = {"split": split}
    for setting, (tallies, rate) in results.items():
        out[setting] = {
            "messages_per_second": round(rate, 1),
            "sets": {
                name: {"messages": t.messages, "flagged": t.flagged, "unscanned": t.unscanned}
                for name, t in tallies.items()
            },
            "signals": {name: dict(tallies[name].signals) for name in TUNABLE},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 2 when the corpus is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--split", type=int, default=SPLIT, help="first validation sample")
    args = parser.parse_args(argv)
    root = Path(os.environ.get("CORPUS", DEFAULT_CORPUS))
    if not all((root / d).is_dir() for d in ("phish", "phish-pool", "ham", "ham-modern")):
        print(f"corpus not found at {root} (set CORPUS)", file=sys.stderr)
        return 2
    samples = load_corpus(root, args.split)
    feed_path = root / FEED_NAME
    settings = {"no feed": Scanner(ScanConfig(), feeds=())}
    if feed_path.is_file():
        settings["with feed"] = Scanner(ScanConfig(), feeds=load_feeds([feed_path]))
    results = {name: evaluate(samples, scanner) for name, scanner in settings.items()}
    if args.json:
        print(json.dumps(as_json(results, args.split), indent=2))
    else:
        print_tables(results, args.split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
