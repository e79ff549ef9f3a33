"""A real mail client (mpop, Debian package) fetches a whole mailbox through both listener modes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES
from tests.helpers import RunningProxy
from tests.tls.conftest import Pki


@pytest.mark.parametrize(("listener", "starttls"), [("tls", "off"), ("stls", "on")])
def test_mpop_fetches_mailbox(
    listener: str, starttls: str, tls_proxy: RunningProxy, pki: Pki, tmp_path: Path,
    require_tool: object,
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = tmp_path / "mpoprc"
    rc.write_text("")
    rc.chmod(0o600)
    result = subprocess.run(
        ["mpop", "-C", str(rc), "--host=127.0.0.1", f"--port={tls_proxy.server.ports[listener]}",
         "--user=demo", "--auth=user", "--passwordeval=echo demo", "--tls=on",
         f"--tls-starttls={starttls}", f"--tls-trust-file={pki.ca_file}", "--keep=on",
         "--only-new=off", f"--uidls-file={tmp_path / 'uidls'}", "--received-header=off",
         f"--delivery=maildir,{maildir}"],
        capture_output=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    fetched = sorted(p.read_bytes().replace(b"\r\n", b"\n") for p in (maildir / "new").iterdir())
    expected = sorted(m.replace(b"\r\n", b"\n") for m in SAMPLE_MESSAGES)
    assert fetched == expected
