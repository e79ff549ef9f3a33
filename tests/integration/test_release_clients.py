"""A released quarantined message reaches real UIDL-tracking clients (issue 19 item 9).

mpop and fetchmail fetch through popproxy in front of the real Dovecot, in ``keep`` and
``no keep`` modes: the first fetch gets the clean message and our notice, ``popproxy
quarantine release`` runs, the next fetch delivers the original exactly once, and a third
fetch delivers nothing new.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from popproxy.quarantine import QuarantineStore
from tests.helpers import LoopThread, RunningProxy, make_config, running_proxy
from tests.integration.dovecot import Dovecot
from tests.support.tools import require_tool

pytestmark = pytest.mark.dovecot

USER = "release"
# Any message with a signal is quarantined (as in test_scan_consistency); the plain one has none.
QUARANTINE = {"tag": 0.01, "defang": 0.02, "quarantine": 0.03}
PHISH_MARK = b"198.51.100.7/login/verify"  # a link only the original phishing message has
CLEAN_MARK = b"short plain-text message number 1"

Fetch = Callable[[RunningProxy, Path, bool], list[bytes]]


@pytest.fixture
def release_proxy(dovecot: Dovecot, loop_thread: LoopThread,
                  tmp_path: Path) -> Iterator[RunningProxy]:
    dovecot.reset_mailbox(USER)
    state = tmp_path / "state"
    config = make_config(dovecot.port, state_dir=str(state),
                         scan={"enabled": True, "thresholds": QUARANTINE})
    with running_proxy(config, loop_thread) as proxy:
        yield proxy
    dovecot.reset_mailbox(USER)


def _delivered(maildir: Path) -> list[bytes]:
    """Messages delivered so far (LF line ends), oldest first, and empty the Maildir."""
    found = sorted((maildir / "new").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    messages = [p.read_bytes().replace(b"\r\n", b"\n") for p in found]
    for path in found:
        path.unlink()
    return messages


def _maildir(base: Path) -> Path:
    maildir = base / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    return maildir


def _mpop(proxy: RunningProxy, base: Path, keep: bool) -> list[bytes]:
    maildir = _maildir(base)
    rc = base / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    result = subprocess.run(
        [require_tool("mpop", "apt-get install mpop"), "-C", str(rc), "--host=127.0.0.1",
         f"--port={proxy.port}", f"--user={USER}", "--auth=user",
         "--passwordeval=echo releasepw", "--tls=off", f"--keep={'on' if keep else 'off'}",
         "--only-new=on", f"--uidls-file={base / 'uidls'}", "--received-header=off",
         f"--delivery=maildir,{maildir}"],
        capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return _delivered(maildir)


def _fetchmail(proxy: RunningProxy, base: Path, keep: bool) -> list[bytes]:
    maildir = _maildir(base)
    deliver = base / "deliver.sh"
    deliver.write_text(f'#!/bin/sh\nexec cat > "{maildir}/new/$(date +%s%N)-$$"\n')
    deliver.chmod(0o700)
    rc = base / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 service {proxy.port} protocol pop3 uidl auth password\n"
        f"  user {USER} password releasepw is root here\n"
        f"  {'keep' if keep else 'no keep'} sslproto '' mda \"{deliver}\"\n")
    rc.chmod(0o600)
    result = subprocess.run(
        [require_tool("fetchmail", "apt-get install fetchmail"), "-f", str(rc),
         "-i", str(base / "fetchids"), "--nodetach", "--nosyslog", "--silent"],
        capture_output=True, timeout=120, env={"HOME": str(base), "PATH": "/usr/bin:/bin"})
    # 0: mail fetched, 1: no new mail (fetchmail(1) EXIT CODES)
    assert result.returncode in (0, 1), result.stderr.decode(errors="replace")
    return _delivered(maildir)


def _release(state: Path) -> None:
    (held,) = QuarantineStore(state / "quarantine").list()
    assert not held.released
    policy = state.parent / "policy.yaml"
    policy.write_text("listeners: [{name: a, port: 1995, mode: tls}]\n"
                      f"state_dir: {state}\n")
    subprocess.run([sys.executable, "-m", "popproxy", "quarantine", "--config", str(policy),
                    "release", held.id], capture_output=True, check=True)


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "no-keep"])
@pytest.mark.parametrize("fetch", [_mpop, _fetchmail], ids=["mpop", "fetchmail"])
def test_release_is_delivered_exactly_once(release_proxy: RunningProxy, tmp_path: Path,
                                           fetch: Fetch, keep: bool) -> None:
    client = tmp_path / "client"
    client.mkdir()
    first = fetch(release_proxy, client, keep)
    assert len(first) == 2
    assert any(CLEAN_MARK in m for m in first)
    assert not any(PHISH_MARK in m for m in first)  # our notice, not the original
    assert fetch(release_proxy, client, keep) == []  # nothing new before the release
    _release(tmp_path / "state")
    second = fetch(release_proxy, client, keep)
    assert len(second) == 1 and PHISH_MARK in second[0], second
    assert b"Subject: Urgent: verify your account" in second[0]
    assert fetch(release_proxy, client, keep) == []  # exactly once
