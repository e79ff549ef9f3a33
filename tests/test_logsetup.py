"""Log lines of ``popproxy run`` under journald: no timestamp of our own (the journal has one),
a ``<N>`` syslog priority prefix; elsewhere the usual timestamped format."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from popproxy.logsetup import JournalFormatter, syslog_priority, to_journal
from tests.support.ports import free_port
from tests.support.waiting import run_until_ready_then_stop

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO popproxy\.server: listening")


def _stream_id(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def test_to_journal_compares_device_and_inode_of_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "stream"
    with path.open("w") as stream:
        assert to_journal(stream, {"JOURNAL_STREAM": _stream_id(path)})
        other = tmp_path / "other"
        other.touch()
        # Inherited from a journald service but redirected elsewhere: not the journal.
        assert not to_journal(stream, {"JOURNAL_STREAM": _stream_id(other)})
        assert not to_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not to_journal(stream, {})
    assert not to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file descriptor


def test_journal_formatter_prefixes_every_line_with_the_priority() -> None:
    record = logging.LogRecord("popproxy.server", logging.ERROR, __file__, 1,
                               "upstream failed:\n%s", ("two lines",), None)
    assert JournalFormatter().format(record) == (
        "<3>ERROR popproxy.server: upstream failed:\n<3>two lines")
    assert [syslog_priority(level) for level in (logging.CRITICAL, logging.ERROR,
                                                 logging.WARNING, logging.INFO,
                                                 logging.DEBUG)] == [2, 3, 4, 6, 7]


@pytest.mark.parametrize("journal", [True, False], ids=["journald", "terminal"])
def test_popproxy_run_log_format(tmp_path: Path, journal: bool) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"listeners: [{{name: pop3, host: 127.0.0.1, port: {free_port()}, mode: plain, "
        "allow_plaintext_login: true}]\n"
        f"upstream: {{host: 127.0.0.1, port: {free_port()}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        "scan: {enabled: false}\n"
        "demo_upstream: {enabled: true}\n"
    )
    output = tmp_path / "output"
    output.touch()
    # Like systemd: stdout and stderr are one stream, named by $JOURNAL_STREAM.
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal:
        env["JOURNAL_STREAM"] = _stream_id(output)
    text = run_until_ready_then_stop(
        [sys.executable, "-m", "popproxy", "run", "--config", str(policy)], output, tmp_path, env,
        timeout=15)
    lines = text.splitlines()
    listening = next(line for line in lines if "listening: pop3" in line)
    warning = next(line for line in lines if "demo upstream" in line)
    if journal:
        assert listening.startswith("<6>INFO popproxy.server: listening: pop3 on 127.0.0.1:")
        assert warning.startswith("<4>WARNING popproxy: demo upstream on 127.0.0.1:")
    else:
        assert TIMESTAMP.match(listening), listening
        assert not listening.startswith("<")
