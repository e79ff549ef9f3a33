#!/usr/bin/env python3
"""Worst-case scan and render time per message, on crafted inputs (issue 14).

Each input is an ordinary phishing link followed by a payload built to make a parser or a
regex backtrack: the ones from the issue, and the classic shapes for every kind of pattern
the scanner has (tags, attributes, URLs, defanged URLs, encoded words, MIME).  For each input
it prints the scan time (``Scanner.scan``) and the defang render time (``apply_action``) of
this checkout and, with ``--reference DIR``, of another checkout (e.g. a ``git worktree`` of
an older commit) in the same run.  The proxy kills a worker at ``scan.time_budget`` + 1 s
whatever these say; this shows how far below that honest-looking crafted mail stays.

Run: ``python bench/scan_worst_case.py [--reference DIR] [--size BYTES] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LINK = '<a href="http://198.51.100.7/login">Sign in to PayPal</a>\r\n'


def inputs(size: int) -> dict[str, bytes]:
    """name -> message; payloads of about ``size`` octets."""
    def html(payload: str) -> bytes:
        return (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n"
                b"Content-Type: text/html; charset=utf-8\r\n\r\n"
                + (LINK + payload + "\r\n").encode())

    def text(payload: str) -> bytes:
        return (b"From: Security <alert@example.test>\r\nSubject: Verify now\r\n\r\n"
                + ("http://198.51.100.7/login\r\n" + payload + "\r\n").encode())

    n = size
    return {
        "tag-unclosed (<a bbbb...)": html("<a" + "b" * n),
        "tag-repeat (<a <a <a ...)": html("<a " * (n // 3)),
        "attr-unclosed-quote": html('<a href="' + "x" * n),
        "attr-many (<a x=1 x=1 ...)": html("<a " + "x=1 " * (n // 4) + ">"),
        "comment-unclosed": html("<!--" + "-" * n),
        "style-unclosed": html("<style>" + "a{}" * (n // 3)),
        "url-repeat (http://http://...)": text("http://" * (n // 7)),
        "url-long-host": text("http://" + "a." * (n // 2)),
        "defanged-repeat (hxxp[.] ...)": text("hxxp[:]//" + "[.]" * (n // 3)),
        "www-repeat (www.www....)": text("www." * (n // 4)),
        "encoded-word-repeat": (b"From: a@example.test\r\nSubject: "
                                + b"=?utf-8?q?" * (n // 10) + b"\r\n\r\nx\r\n"),
        "whitespace-run": html(" " * n + "<a href=http://198.51.100.7/x>x</a>"),
        "mime-boundary-repeat": (b"From: a@example.test\r\nContent-Type: multipart/mixed; "
                                 b'boundary="b"\r\n\r\n' + b"--b\r\n" * (n // 5)),
        "nested-div (<div><div>...)": html("<div>" * (n // 5)),
        "formatting-many (<b id=N>...)": html("".join(f"<b id={i}>" for i in range(n // 10))),
        "attr-distinct (<p a0=1 a1=1 ...)": html(
            "<p " + " ".join(f"a{i}=1" for i in range(n // 7)) + ">"),
        "encoded-words-alternating": (
            b"From: a@example.test\r\nSubject: "
            + " ".join("=?utf-8?q?a?= x" if i % 2 else "=?x?q?a?=" for i in range(n // 12))
            .encode() + b"\r\n\r\nx\r\n"),
        "param-quoted-semicolons": (
            b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: text/html; "
            + b'a="' + b";" * n + b'"\r\n\r\n' + LINK.encode()),
    }


def measure(size: int) -> dict[str, tuple[float, float, str]]:
    """name -> (scan seconds, render seconds, action) for the scanner importable here."""
    import time

    from popproxy.scan import Scanner, ScanSettings, Verdict, apply_action

    config = ScanSettings(time_budget_seconds=600.0)
    scanner = Scanner(config, feeds=())
    out: dict[str, tuple[float, float, str]] = {}
    for name, message in inputs(size).items():
        started = time.perf_counter()
        verdict = scanner.scan(message)
        scanned = time.perf_counter() - started
        started = time.perf_counter()
        apply_action(message, Verdict(action="defang", score=9.0, reasons=("x",)), config)
        rendered = time.perf_counter() - started
        out[name] = (scanned, rendered, verdict.action)
    return out


def run_in(tree: Path, size: int) -> dict[str, tuple[float, float, str]]:
    code = ("import json,sys; sys.path.insert(0, sys.argv[1]); "
            "sys.path.insert(0, sys.argv[3]); import scan_worst_case as b; "
            "print(json.dumps(b.measure(int(sys.argv[2]))))")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", code, str(tree), str(size),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          env=env, check=True, cwd=tree)
    return {k: (float(v[0]), float(v[1]), str(v[2]))
            for k, v in json.loads(done.stdout).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="another checkout to measure beside")
    parser.add_argument("--size", type=int, default=100_000, help="payload octets (100000)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    here = run_in(REPO, args.size)
    ref = run_in(args.reference, args.size) if args.reference else None
    if args.json:
        print(json.dumps({"this": here, "reference": ref}))
        return
    head = "| input | scan s | render s | action |"
    if ref:
        head += " reference scan s | reference render s | reference action |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, (scan, render, action) in here.items():
        row = f"| {name} | {scan:.3f} | {render:.3f} | {action} |"
        if ref:
            r_scan, r_render, r_action = ref[name]
            row += f" {r_scan:.3f} | {r_render:.3f} | {r_action} |"
        print(row)
    worst = max(scan + render for scan, render, _ in here.values())
    print(f"\nworst scan + render here: {worst:.3f} s (payload {args.size} octets)")
    if ref:
        print(f"worst scan + render reference: "
              f"{max(s + r for s, r, _ in ref.values()):.3f} s")


if __name__ == "__main__":
    main()
