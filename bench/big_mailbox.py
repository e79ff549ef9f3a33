"""A big leave-on-server mailbox in front of Dovecot: first STAT, feed and threshold changes,
and ``popproxy warm`` (issue 17).  One table; bench/README.md explains it.

    PYTHONPATH=$PWD python3 bench/big_mailbox.py                    # 20,000 messages
    PYTHONPATH=$PWD python3 bench/big_mailbox.py --messages 2000    # a quicker run

Run as root on the lab machine (Debian 12, dovecot-core and dovecot-pop3d).  The mailbox is
generated at run time with the lab's own message builders (``$LAB_DIR/make_mailboxes.py``:
text, benign and malicious HTML, multipart/alternative, base64 attachments of 50-400 KB; no
corpus file is copied) into ``--work`` (kept for the next run), and served by a private Dovecot
2.3 started like the integration tests' (tests/integration/dovecot.py, with a master user), so
the shared lab's mailboxes are never touched.  popproxy runs in this process (scan workers as
subprocesses), a fresh proxy per phase over one ``state_dir``, as after a restart:

1. ``cold``: empty cache; the first STAT judges every message (downloads it).
2. ``feed change``: one unrelated host added to the feed: verdicts re-scored from evidence.
3. ``threshold change``: ``scan.thresholds.quarantine`` raised by 0.01.
4. ``warm``: a new, empty ``state_dir``; ``popproxy warm --offline`` (master user) fills it.
5. ``after warm``: the owner's first session after warming.

Every session then LISTs and RETRs every message and counts those whose RETR octets differ
from LIST (must be 0).  Exit status 1 when a target is missed: a mismatch, or bytes read to
judge after a feed or threshold change with no action changed, or STAT >= 0.5 s there.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import poplib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from popproxy.metrics import Metrics
from popproxy.policy import Policy, load_config
from popproxy.proxy.observe import Observer
from popproxy.warm_cli import main_warm
from tests.helpers import LoopThread, running_proxy
from tests.integration import dovecot as dovecot_mod

REPO = Path(__file__).resolve().parents[1]
LAB_DIR = Path(os.environ.get("LAB_DIR", REPO.parent / "shared" / "lab")).resolve()
USER, PASSWORD = "big", "bigpw"
BASE_TS = 1_700_000_000  # Maildir names in time order: Dovecot numbers messages that way
# The targets for an unchanged action after a feed or threshold change.
STAT_TARGET_S = 0.5
# A generous client timeout: the cold STAT of 20,000 messages is the thing being measured.
CLIENT_TIMEOUT = 3600


def _lab() -> ModuleType:
    path = LAB_DIR / "make_mailboxes.py"
    if not path.exists():
        sys.exit(f"no make_mailboxes.py in LAB_DIR={LAB_DIR}; set LAB_DIR to the lab directory")
    spec = importlib.util.spec_from_file_location("lab_make_mailboxes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _message(lab: ModuleType, g: Any, i: int) -> bytes:
    """Message ``i``: mostly text, some HTML (a few malicious), 5 % with a big attachment."""
    roll = g.rnd.random()
    if roll < 0.80:
        m = lab.small_text(g, USER, i)
    elif roll < 0.90:
        m = lab.html_benign(g, USER, i)
    elif roll < 0.93:
        m = lab.html_malicious(g, USER, i, g.rnd.choice([None, "quoted-printable", "base64"]))
    elif roll < 0.95:
        m = lab.alternative(g, USER, True)
    else:
        m, _ = lab.big_attachment(g, USER, g.rnd.randint(50_000, 400_000), f"report-{i}.bin", i)
    data: bytes = lab.to_bytes(m)
    return data if data.endswith(b"\n") else data + b"\n"


def make_mailbox(work: Path, count: int, seed: int) -> Path:
    """``work/big/Maildir`` with ``count`` messages (reused when made with the same values)."""
    home = work / USER
    stamp = work / "params.json"
    params = {"messages": count, "seed": seed, "lab": str(LAB_DIR)}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return home
    lab = _lab()
    g = lab.Gen(seed)
    maildir = home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for old in (maildir / "new").iterdir():
        old.unlink()
    for i in range(1, count + 1):
        (maildir / "new" / f"{BASE_TS + i}.M{i:06d}P1.bench").write_bytes(_message(lab, g, i))
    stamp.write_text(json.dumps(params))
    return home


def _prepare(home: Path) -> Callable[[Path, int, int], None]:
    """Dovecot's hook: our user in its passwd-file, its Maildir linked in, owned by mail."""
    def prepare(root: Path, uid: int, gid: int) -> None:
        with (root / "users.passwd").open("a") as handle:
            handle.write(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        (root / "mail" / USER).symlink_to(home)
        for path in (home, *home.rglob("*")):
            os.chown(path, uid, gid)
    return prepare


def write_policy(path: Path, port: int, state: Path, feed: Path, quarantine: float | None,
                 secret: Path) -> Path:
    thresholds = "" if quarantine is None else f"\n  thresholds: {{quarantine: {quarantine}}}"
    path.write_text(f"""\
listeners:
  - {{name: pop3, host: 127.0.0.1, port: 1, mode: plain, allow_plaintext_login: true}}
upstream:
  host: 127.0.0.1
  port: {port}
  response_timeout: 600
  warm_login: {{master_user: {dovecot_mod.MASTER_USER}, password_file: {secret}}}
limits: {{auth_failure_delay: 0}}
lockout: {{enabled: false}}
state_dir: {state}
scan:
  enabled: true
  feeds: [{feed}]{thresholds}
""")
    return path


@dataclass
class Row:
    phase: str
    stat_s: float | None = None
    downloaded: int = 0
    rescored: int = 0
    judge_octets: int = 0
    messages: int = 0
    mismatches: int = 0
    check_s: float = 0.0
    note: str = ""
    stat_cpu_s: float = 0.0  # this process's CPU during the STAT: the proxy, not its workers


def _counts(observer: Observer) -> tuple[int, int, int]:
    registry = observer.metrics.registry
    get = registry.get_sample_value
    return (int(get("popproxy_scan_judged_total", {"how": "downloaded"}) or 0),
            int(get("popproxy_scan_judged_total", {"how": "rescored"}) or 0),
            int(get("popproxy_scan_judge_bytes_total") or 0))


def session(config: Policy, loop: LoopThread, phase: str) -> Row:
    """One owner's session through a fresh proxy: STAT timed, then LIST == RETR for all."""
    observer = Observer(Metrics())
    row = Row(phase)
    with running_proxy(config, loop, observer) as proxy:
        client = poplib.POP3("127.0.0.1", proxy.port, timeout=CLIENT_TIMEOUT)
        client.user(USER)
        client.pass_(PASSWORD)
        started, cpu = time.perf_counter(), time.process_time()
        row.messages, _ = client.stat()
        row.stat_s = time.perf_counter() - started
        row.stat_cpu_s = time.process_time() - cpu
        row.downloaded, row.rescored, row.judge_octets = _counts(observer)
        started = time.perf_counter()
        _, lines, _ = client.list()
        for line in lines:
            number, size = (int(v) for v in line.split())
            if client.retr(number)[2] != size:
                row.mismatches += 1
        row.check_s = time.perf_counter() - started
        client.quit()
    return row


def warm(policy: Path, rate: float) -> Row:
    out = io.StringIO()
    started = time.perf_counter()
    # --workers 1: the proxy here is one process (it reads state_dir's verdict file).
    status = main_warm(["--config", str(policy), "--user", USER, "--offline", "--fresh",
                        "--workers", "1", "--rate", str(rate), "--byte-rate", "0"], out)
    elapsed = time.perf_counter() - started
    text = out.getvalue()
    downloaded = int(text.rsplit(": ", 1)[1].split(" messages downloaded")[0])
    octets = int(text.rsplit(", ", 1)[1].split(" octets")[0])
    return Row("warm (popproxy warm)", None, downloaded, 0, octets, check_s=elapsed,
               note=f"exit {status}, {elapsed:.1f} s")


def print_table(rows: list[Row], total_octets: int) -> None:
    print(f"\nmailbox: {rows[0].messages} messages, {total_octets / 1e6:.0f} MB (LIST total)")
    print("| phase | first STAT s | STAT CPU s | downloaded to judge | re-scored "
          "| octets read to judge | LIST != RETR | RETR all s | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        stat = "- | -" if r.stat_s is None else f"{r.stat_s:.2f} | {r.stat_cpu_s:.2f}"
        print(f"| {r.phase} | {stat} | {r.downloaded} | {r.rescored} | {r.judge_octets} | "
              f"{r.mismatches if r.stat_s is not None else '-'} | {r.check_s:.1f} | {r.note} |")


def _missed(rows: list[Row]) -> list[str]:
    missed = [f"{r.phase}: {r.mismatches} LIST != RETR" for r in rows if r.mismatches]
    # A message whose action changed is downloaded (counted): the targets are for the rest.
    for r in rows:
        unchanged = r.phase in ("feed change", "threshold change", "after warm") and (
            r.downloaded == 0)
        if unchanged and (r.judge_octets or (r.stat_s or 0) >= STAT_TARGET_S):
            missed.append(f"{r.phase}: {r.judge_octets} octets, STAT {r.stat_s:.2f} s")
    return missed


def run(args: argparse.Namespace) -> int:
    home = make_mailbox(args.work, args.messages, args.seed)
    total = sum((p.stat().st_size + p.read_bytes().count(b"\n"))
                for p in (home / "Maildir").rglob("*.bench*") if p.is_file())
    upstream = dovecot_mod.start(prepare=_prepare(home))
    loop = LoopThread()
    try:
        return _phases(args, upstream, loop, total)
    finally:
        loop.close()
        dovecot_mod.cleanup(upstream)


def _phases(args: argparse.Namespace, upstream: dovecot_mod.Dovecot, loop: LoopThread,
            total: int) -> int:
    tmp = args.work / f"run-{os.getpid()}"
    tmp.mkdir()
    secret, feed = tmp / "master.secret", tmp / "feed.txt"
    secret.write_text(dovecot_mod.MASTER_PASSWORD + "\n")
    secret.chmod(0o600)
    feed.write_text("evil.test\n")
    state = tmp / "state"
    policy = write_policy(tmp / "policy.yaml", upstream.port, state, feed, None, secret)
    rows = [session(load_config(policy), loop, "cold (empty cache)")]
    feed.write_text("evil.test\nnew-phish.example\n")  # an hourly feed update
    rows.append(session(load_config(policy), loop, "feed change"))
    default_q = load_config(policy).scan.thresholds.quarantine
    changed = write_policy(tmp / "policy2.yaml", upstream.port, state, feed,
                           default_q + 0.01, secret)
    rows.append(session(load_config(changed), loop, "threshold change"))
    fresh = write_policy(tmp / "policy3.yaml", upstream.port, tmp / "state-warm", feed, None,
                         secret)
    rows.append(warm(fresh, args.warm_rate))
    rows.append(session(load_config(fresh), loop, "after warm"))
    rows[-2].messages = rows[0].messages
    print_table(rows, total)
    print(f"\ncommand: {' '.join(sys.argv)}")
    missed = _missed(rows)
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--work", type=Path, default=Path("/tmp/popproxy-big-mailbox"),
                        help="where the generated mailbox is kept between runs")
    parser.add_argument("--warm-rate", type=float, default=0.0,
                        help="popproxy warm --rate (messages/s; 0: unlimited)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
