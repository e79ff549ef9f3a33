"""Log lines of ``popproxy run``: with a timestamp on a terminal or in a file; under journald
without one (the journal stamps each line itself) and with a ``<N>`` syslog priority prefix,
so ``journalctl -p warning`` finds popproxy's warnings and errors.

systemd sets ``$JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it connects to stdout and
stderr (systemd.exec(5)); it counts only if standard error is still that stream, not when a
child of such a service redirects its output elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"  # journald adds time and identifier
# What --log-level takes (any case): a typo is an argparse error, not a traceback.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# logging level -> syslog priority (sd-daemon.h SD_ERR ... SD_DEBUG)
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    return next((prio for level, prio in _PRIORITIES if levelno >= level), 7)


def to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal stream systemd handed us (``$JOURNAL_STREAM``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (stat.st_dev, stat.st_ino)
    except (ValueError, OSError, AttributeError):  # unset, malformed, or not a real file
        return False


class JournalFormatter(logging.Formatter):
    """Without a timestamp, with the ``<N>`` priority prefix journald understands; the lines
    of a multi-line message (a traceback) get the same priority."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def configure(level: str, stream: TextIO | None = None,
              environ: Mapping[str, str] | None = None) -> None:
    """Root logging for ``popproxy run``: to ``stream`` (standard error)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if to_journal(stream, environ)
                         else logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
