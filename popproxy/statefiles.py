"""Private state: directories 0700, files 0600, also when they already exist with wider modes.

State files (quarantined mail and its metadata, the audit log, verdicts, keys) hold user names,
client addresses and mail: nobody but the service user may read them.  A file or directory
made before this rule (or by hand, or with a loose umask) is tightened when popproxy opens it.
If it belongs to someone else and cannot be changed, that is logged and the work goes on: the
admin decided its mode.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("popproxy.state")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _narrowed(mode: int, allowed: int) -> int | None:
    """The mode without bits outside ``allowed``; None if it has none to drop."""
    current = stat.S_IMODE(mode)
    return None if current & ~allowed == 0 else current & allowed


def tighten(path: Path, allowed: int) -> None:
    """Drop group/other permission bits from ``path`` (no-op if it is already private)."""
    try:
        new = _narrowed(path.stat().st_mode, allowed)
        if new is not None:
            os.chmod(path, new)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("cannot make %s private (mode %o wanted): %s", path, allowed,
                    exc.strerror or exc)


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if missing, else tighten it to 0700.  Parents are not touched:
    a caller that owns them makes them private first (e.g. state_dir before state_dir/x)."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    tighten(path, PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` creating the file 0600, and tightening an existing wider one (fchmod)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        new = _narrowed(os.fstat(fd).st_mode, PRIVATE_FILE)
        if new is not None:
            os.fchmod(fd, new)
    except PermissionError as exc:  # not our file: leave it as its owner made it
        log.warning("cannot make %s private (mode 600 wanted): %s", path, exc.strerror or exc)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path``'s contents with ``data``; the file is 0600 (see ``open_private``)."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
