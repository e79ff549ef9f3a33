"""docs/clients.md works as written: mpop, fetchmail and curl fetch through popproxy with the
configuration blocks copied from the page, pinned to the self-signed certificate by the values
``popproxy cert`` prints; a wrong pin is refused."""

from __future__ import annotations

import getpass
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from popproxy.cert_cli import CertificateFacts, certificate_facts
from popproxy.policy import Policy
from popproxy.proxy.demo_upstream import SAMPLE_MESSAGES
from popproxy.proxy.tls import generate_self_signed
from tests.helpers import LoopThread, RunningProxy, running_demo, running_proxy
from tests.support.tools import require_tool

DOC = Path(__file__).resolve().parents[2] / "docs" / "clients.md"
WRONG_MD5 = ":".join(["00"] * 16)
WRONG_SHA256 = ":".join(["00"] * 32)


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def proxy(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningProxy, CertificateFacts]]:
    state = tmp_path_factory.mktemp("state")
    with running_demo(loop) as demo:
        config = Policy.model_validate({
            "listeners": [{"name": "stls", "port": 1, "mode": "starttls"},
                          {"name": "tls", "port": 2, "mode": "tls"}],
            "upstream": {"port": demo.port},
            "tls": {"certificates": []},  # the self-signed one, as the default policy
            "state_dir": str(state),
        })
        with running_proxy(config, loop) as running:
            yield running, certificate_facts(generate_self_signed(state).cert)


def fill(text: str, proxy: RunningProxy, facts: CertificateFacts, md5: str = "",
         sha256: str = "") -> str:
    ports = proxy.server.ports
    for old, new in {
        "<proxy-host>": "127.0.0.1", "<user>": "demo", "<password>": "demo",
        "<local-user>": getpass.getuser(), "<sha256-fingerprint>": sha256 or facts.sha256,
        "<md5-fingerprint>": md5 or facts.md5, "<public-key-pin>": facts.public_key_pin,
        "port 995": f"port {ports['tls']}", ":995/": f":{ports['tls']}/",
        "port 110": f"port {ports['stls']}", ":110/": f":{ports['stls']}/",
    }.items():
        text = text.replace(old, new)
    return text


def subjects(data: bytes) -> list[bytes]:
    return sorted(re.findall(rb"(?m)^Subject: [^\r\n]*", data))


EXPECTED = sorted(s for m in SAMPLE_MESSAGES for s in subjects(m))


def mpop(proxy: RunningProxy, facts: CertificateFacts, tmp: Path, account: str,
         sha256: str = "") -> tuple[int, bytes]:
    maildir = tmp / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "password").write_text("demo\n")
    rc = fill(blocks("mpoprc")[0], proxy, facts, sha256=sha256)
    rc = rc.replace("~/.config/mail-password", str(tmp / "password"))
    rc = rc.replace("~/.mpop_uidls", str(tmp / "uidls")).replace("~/Maildir", str(maildir))
    (tmp / "mpoprc").write_text(rc)
    (tmp / "mpoprc").chmod(0o600)
    result = subprocess.run(["mpop", "-C", str(tmp / "mpoprc"), account], capture_output=True,
                            timeout=60)
    fetched = b"".join(p.read_bytes() for p in (maildir / "new").iterdir())
    return result.returncode, fetched


@pytest.mark.parametrize("account", ["proxy", "proxy-stls"])
def test_mpop_config(proxy: tuple[RunningProxy, CertificateFacts], tmp_path: Path,
                     account: str) -> None:
    require_tool("mpop", "apt-get install mpop")
    code, fetched = mpop(*proxy, tmp_path, account)
    assert code == 0
    assert subjects(fetched) == EXPECTED


def test_mpop_refuses_a_wrong_fingerprint(proxy: tuple[RunningProxy, CertificateFacts],
                                          tmp_path: Path) -> None:
    require_tool("mpop", "apt-get install mpop")
    code, fetched = mpop(*proxy, tmp_path, "proxy", sha256=WRONG_SHA256)
    assert code != 0 and fetched == b""


def fetchmail(block: str, proxy: RunningProxy, facts: CertificateFacts, tmp: Path,
              md5: str = "") -> tuple[int, bytes]:
    out = tmp / "delivered"
    rc = fill(block, proxy, facts, md5=md5)
    rc = rc.replace('mda "/usr/bin/procmail -d %T"', f'mda "cat >> {out}"')
    (tmp / "fetchmailrc").write_text(rc)
    (tmp / "fetchmailrc").chmod(0o600)
    result = subprocess.run(
        ["fetchmail", "-f", str(tmp / "fetchmailrc"), "-i", str(tmp / "ids"), "--pidfile",
         str(tmp / "pid"), "--nosyslog"], capture_output=True, timeout=60)
    return result.returncode, out.read_bytes() if out.exists() else b""


@pytest.mark.parametrize("which", [0, 1], ids=["implicit-tls", "stls"])
def test_fetchmail_config(proxy: tuple[RunningProxy, CertificateFacts], tmp_path: Path,
                          which: int) -> None:
    require_tool("fetchmail", "apt-get install fetchmail")
    code, delivered = fetchmail(blocks("fetchmailrc")[which], *proxy, tmp_path)
    assert code == 0
    assert subjects(delivered) == EXPECTED


def test_fetchmail_refuses_a_wrong_fingerprint(proxy: tuple[RunningProxy, CertificateFacts],
                                               tmp_path: Path) -> None:
    require_tool("fetchmail", "apt-get install fetchmail")
    code, delivered = fetchmail(blocks("fetchmailrc")[0], *proxy, tmp_path, md5=WRONG_MD5)
    assert code != 0 and delivered == b""


def test_curl_commands(proxy: tuple[RunningProxy, CertificateFacts]) -> None:
    require_tool("curl", "apt-get install curl")
    lines = [line for line in blocks("curl")[0].splitlines() if line.strip()]
    assert len(lines) == 2  # implicit TLS and STLS
    for line in lines:
        result = subprocess.run(shlex.split(fill(line, *proxy)), capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert subjects(result.stdout) == subjects(SAMPLE_MESSAGES[0])
