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
Campaigns (bench/campaigns.py clusters near-duplicates) are kept on one side of the split by
this rule: a campaign belongs to the side of its *first* sample, so validation messages whose
campaign began in the tuning period are set aside ("validate" keeps every message for
comparison with earlier figures; "validate-new" is the honest one: campaigns never seen while
tuning).  Scores are reported for both combiners (the trained model of popproxy/scan/model.py
and the weights table), and detection at fixed false-positive rates on the union of both ham
sets shows what each threshold choice costs.  Validation columns are for reporting only: never
tune on them.

Run: ``python bench/scan_quality.py [--json] [--split 3600]``.
"""

from __future__ import annotations

import argparse
import json
import math
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
for _path in (REPO, REPO / "bench"):  # bench/ for campaigns.py, also when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from campaigns import campaign_keys, cluster  # noqa: E402

from popproxy.scan import Scanner, ScanSettings, load_feeds  # noqa: E402
from popproxy.scan.scoring import combine, forces_tag  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
FEED_NAME = "feeds/openphish-hosts.txt"
# evaluate.py's default: samples 3600 and up (late 2023 - early 2024) are the validation set.
SPLIT = 3600
SETS = ("tune", "validate", "validate-new", "ham", "ham-modern")
FLAGGED_ACTIONS = ("tag", "defang", "quarantine")


@dataclass
class Sample:
    """One corpus message, the set it belongs to and (phishing only) its campaign."""

    name: str
    group: str
    data: bytes
    campaign: int = -1


@dataclass
class Tally:
    """Counts for one set and one scanner setting."""

    messages: int = 0
    flagged: int = 0
    unscanned: int = 0
    signals: Counter[str] = field(default_factory=Counter)

    def add(self, action: str, signals: set[str]) -> None:
        self.messages += 1
        self.flagged += action in FLAGGED_ACTIONS
        self.unscanned += action == "unscanned"
        self.signals.update(signals)


@dataclass
class Scored:
    """One message's outcome under one scanner setting, by both combiners."""

    group: str
    campaign: int
    signals: set[str]
    actions: dict[str, str]  # combiner -> action
    scores: dict[str, float]  # combiner -> score for ranking (forced tag: infinity)


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
COMBINERS = ("model", "weights")
FP_TARGETS = (0.001, 0.005, 0.01)
# A signal whose tuning hits come mostly from one campaign is a fit to that campaign.
CAMPAIGN_SHARE_ALERT = 0.5
CAMPAIGN_MIN_HITS = 5
TOP_SIGNALS = 20  # issue 15: no signal of the top 20 may fire on one campaign only


def assign_campaigns(samples: list[Sample]) -> None:
    """Cluster the phishing (in time order) and set aside validation copies of old campaigns.

    A validation message whose campaign's first sample is in the tuning period stays in
    "validate" (comparable with earlier figures) but is not counted in "validate-new".
    """
    phish = [s for s in samples if s.group in ("tune", "validate")]
    ids = cluster(campaign_keys(s.data) for s in phish)
    first_group = [phish[campaign].group for campaign in ids]
    for sample, campaign, first in zip(phish, ids, first_group, strict=True):
        sample.campaign = campaign
        if sample.group == "validate" and first == "validate":
            sample.group = "validate-new"


def in_sets(group: str) -> tuple[str, ...]:
    """The report sets a sample counts in ("validate-new" is part of "validate")."""
    return ("validate", "validate-new") if group == "validate-new" else (group,)


def evaluate(samples: list[Sample], scanner: Scanner) -> tuple[list[Scored], float]:
    """Scan every sample once (both combiners from one pass); outcomes and messages/s.

    Speed is messages per second of this process's CPU time (time.process_time), i.e. on one
    core, so other load on the machine does not distort it.
    """
    for sample in samples[:WARM_UP]:
        scanner.scan(sample.data)
    elapsed = 0.0
    out = []
    thresholds = scanner.config.thresholds
    for sample in samples:
        start = time.process_time()
        verdict = scanner.scan(sample.data)
        elapsed += time.process_time() - start
        names = {s.name for s in verdict.signals}
        table = combine(verdict.signals, thresholds) if verdict.action != "unscanned" else verdict
        forced = math.inf if any(forces_tag(n) for n in names) else 0.0
        out.append(Scored(
            sample.group, sample.campaign, names,
            actions={"model": verdict.action, "weights": table.action},
            scores={"model": max(verdict.score, forced), "weights": max(table.score, forced)},
        ))
    return out, len(samples) / elapsed if elapsed else 0.0


def tallies(scored: list[Scored], combiner: str) -> dict[str, Tally]:
    """Counts per report set for one combiner."""
    out = {name: Tally() for name in SETS}
    for item in scored:
        for name in in_sets(item.group):
            out[name].add(item.actions[combiner], item.signals)
    return out


def pct(n: int, d: int) -> str:
    """'53.8% (1838/3416)'."""
    return f"{100.0 * n / d:5.1f}% ({n}/{d})" if d else "  n/a"


def at_fixed_fp(scored: list[Scored], combiner: str, target: float) -> dict[str, object]:
    """Detection when the threshold is set so that at most ``target`` of all ham is flagged.

    The threshold is just above the score of the (allowed+1)-th highest-scoring ham message
    (ties count as flagged, so a tie at the boundary lowers detection, never raises FP).
    """
    ham = sorted((i.scores[combiner] for i in scored if i.group in ("ham", "ham-modern")),
                 reverse=True)
    allowed = math.floor(target * len(ham) + 1e-9)
    bar = ham[allowed] if allowed < len(ham) else -math.inf
    out: dict[str, object] = {"target": target, "above": bar}
    for name in ("tune", "validate", "validate-new", "ham", "ham-modern"):
        members = [i for i in scored if name in in_sets(i.group)]
        out[name] = (sum(i.scores[combiner] > bar for i in members), len(members))
    return out


def campaign_concentration(scored: list[Scored]) -> dict[str, tuple[float, int, int, int]]:
    """Per signal: share of its tuning hits from its largest campaign, that count, all hits,
    and how many campaigns it fired on."""
    per_signal: dict[str, Counter[int]] = {}
    for item in scored:
        if item.group == "tune":
            for name in item.signals:
                per_signal.setdefault(name, Counter())[item.campaign] += 1
    out = {}
    for name, campaigns in per_signal.items():
        total = sum(campaigns.values())
        top = campaigns.most_common(1)[0][1]
        out[name] = (top / total, top, total, len(campaigns))
    return out


Results = dict[str, tuple[list[Scored], float]]


def print_tables(results: Results, split: int, combiners: tuple[str, ...]) -> None:
    """Human-readable tables (see the module docstring)."""
    any_scored = next(iter(results.values()))[0]
    new_campaigns = {i.campaign for i in any_scored if i.group == "validate-new"}
    new = sum(i.group == "validate-new" for i in any_scored)
    old = sum(i.group == "validate" for i in any_scored)
    print(f"## Flagged (action tag, defang or quarantine); split at sample {split}\n")
    print(f"validate-new: {new} messages of {len(new_campaigns)} campaigns first seen at or "
          f"after the split; {old} validation messages of campaigns begun before it are "
          "left out of it.\n")
    print(f"| {'setting':<18} | {'tune phish':<20} | {'validate phish':<20} "
          f"| {'validate-new phish':<20} | {'ham (FP)':<16} | {'ham-modern (FP)':<16} |")
    print(f"|{'-' * 20}|{'-' * 22}|{'-' * 22}|{'-' * 22}|{'-' * 18}|{'-' * 18}|")
    for setting, (scored, _) in results.items():
        for combiner in combiners:
            t = tallies(scored, combiner)
            cells = [pct(t[name].flagged, t[name].messages) for name in SETS]
            print(f"| {setting + ', ' + combiner:<18} | {cells[0]:<20} | {cells[1]:<20} "
                  f"| {cells[2]:<20} | {cells[3]:<16} | {cells[4]:<16} |")
    print("\n## Detection at fixed false-positive rates (threshold from all 895 ham)\n")
    print(f"| {'setting':<18} | {'FP target':<9} | {'score >':<7} | {'validate-new':<20} "
          f"| {'validate':<20} | {'ham':<14} | {'ham-modern':<14} |")
    print(f"|{'-' * 20}|{'-' * 11}|{'-' * 9}|{'-' * 22}|{'-' * 22}|{'-' * 16}|{'-' * 16}|")
    for setting, (scored, _) in results.items():
        for combiner in combiners:
            for target in FP_TARGETS:
                row = at_fixed_fp(scored, combiner, target)
                cells = [pct(*row[n]) for n in ("validate-new", "validate", "ham", "ham-modern")]
                print(f"| {setting + ', ' + combiner:<18} | {100 * target:>7.1f} % "
                      f"| {row['above']:>7.2f} | {cells[0]:<20} | {cells[1]:<20} "
                      f"| {cells[2]:<14} | {cells[3]:<14} |")
    for setting, (scored, _) in results.items():
        _print_signals(setting, scored, combiners[-1])
    print("\n## Throughput (CPU time of one core, scan only, files preloaded)\n")
    for setting, (scored, rate) in results.items():
        unscanned = sum(i.actions[combiners[0]] == "unscanned" for i in scored)
        print(f"- {setting}: {rate:.0f} messages/s; unscanned: {unscanned}")


def _print_signals(setting: str, scored: list[Scored], combiner: str) -> None:
    t = tallies(scored, combiner)
    concentration = campaign_concentration(scored)
    names = sorted(set().union(*(t[s].signals for s in SETS)),
                   key=lambda n: (-t["tune"].signals[n], n))
    cols = ("tune", "validate-new", "ham-modern", "ham")
    print(f"\n## Per signal, {setting} (share of messages where it fired; validation columns "
          "are for reporting, never for tuning)\n")
    print(f"| {'signal':<28} | {'tune phish':<18} | {'validate-new phish':<18} "
          f"| {'ham-modern':<14} | {'ham':<14} | {'top campaign':<12} |")
    print(f"|{'-' * 30}|{'-' * 20}|{'-' * 20}|{'-' * 16}|{'-' * 16}|{'-' * 14}|")
    for n in names:
        cells = [pct(t[s].signals[n], t[s].messages) for s in cols]
        share = concentration.get(n)
        top = f"{100 * share[0]:.0f}% of {share[2]}, {share[3]} c." if share else "-"
        print(f"| {n:<28} | {cells[0]:<18} | {cells[1]:<18} | {cells[2]:<14} "
              f"| {cells[3]:<14} | {top:<12} |")
    alerts = sorted(
        ((name, c) for name, c in concentration.items()
         if c[0] >= CAMPAIGN_SHARE_ALERT and c[2] >= CAMPAIGN_MIN_HITS),
        key=lambda item: -item[1][0],
    )
    print(f"\nSignals firing on one campaign far more than elsewhere ({setting}: at least "
          f"{CAMPAIGN_SHARE_ALERT:.0%} of {CAMPAIGN_MIN_HITS}+ tuning hits from one campaign):")
    for name, (share, top, total, spread) in alerts:
        print(f"- {name}: {top} of {total} tuning hits ({share:.0%}) from one campaign "
              f"(fires on {spread} campaigns)")
    if not alerts:
        print("- none")
    top20 = names[:TOP_SIGNALS]
    lone = [n for n in top20 if concentration.get(n, (0, 0, 0, 2))[3] < 2]
    print(f"Top {TOP_SIGNALS} signals by tuning hits firing on one campaign only: "
          f"{', '.join(lone) if lone else 'none'}; fewest campaigns among them: "
          f"{min(concentration[n][3] for n in top20 if n in concentration)}")


def as_json(results: Results, split: int, combiners: tuple[str, ...]) -> dict[str, object]:
    """The same numbers as a JSON-able dict."""
    out: dict[str, object] = {"split": split}
    for setting, (scored, rate) in results.items():
        entry: dict[str, object] = {"messages_per_second": round(rate, 1)}
        for combiner in combiners:
            t = tallies(scored, combiner)
            entry[combiner] = {
                "sets": {
                    name: {"messages": x.messages, "flagged": x.flagged,
                           "unscanned": x.unscanned}
                    for name, x in t.items()
                },
                "fixed_fp": [
                    {k: (v if k != "above" or math.isfinite(float(str(v))) else None)
                     for k, v in at_fixed_fp(scored, combiner, target).items()}
                    for target in FP_TARGETS
                ],
            }
        t = tallies(scored, combiners[-1])
        entry["signals"] = {name: dict(t[name].signals) for name in SETS}
        entry["campaigns"] = {
            "validate_new": len({i.campaign for i in scored if i.group == "validate-new"}),
            "signal_concentration": campaign_concentration(scored),
        }
        out[setting] = entry
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
    assign_campaigns(samples)
    feed_path = root / FEED_NAME
    config = ScanSettings(combiner="model")  # the weights' verdict is recomputed from its signals
    settings = {"no feed": Scanner(config, feeds=())}
    if feed_path.is_file():
        settings["with feed"] = Scanner(config, feeds=load_feeds([feed_path]))
    # Without a usable model file both combiners are the weights table: report it once.
    combiners = COMBINERS if settings["no feed"].model is not None else ("weights",)
    results = {name: evaluate(samples, scanner) for name, scanner in settings.items()}
    if args.json:
        print(json.dumps(as_json(results, args.split, combiners), indent=2))
    else:
        print_tables(results, args.split, combiners)
    return 0


if __name__ == "__main__":
    sys.exit(main())
