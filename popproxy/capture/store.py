"""The capture directory: created private (0700), one file per session, each 0600.

Plain blocking file I/O (the session runs ``write_capture`` in a worker thread).  Files are
created with O_EXCL and O_NOFOLLOW, so an existing file or a planted symlink is never written
through; a name already taken gets a numbered suffix.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("popproxy.capture")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SUFFIX = ".mitm"
MAX_NAME_ATTEMPTS = 100  # numbered suffixes tried before giving up on a session's file
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """``popproxy run --capture DIR [--capture-bodies]``."""

    directory: Path
    keep_bodies: bool = False  # --capture-bodies: message contents kept (sensitive)


def prepare_directory(path: Path) -> Path:
    """Create the capture directory (0700) if needed; warn if others can read an existing one."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"capture path {path} is not a directory")
    if info.st_mode & 0o077:
        log.warning("capture directory %s is accessible to other users (mode %o): captures "
                    "hold mail metadata, consider chmod 700", path, stat.S_IMODE(info.st_mode))
    return path


def capture_name(session_id: str) -> str:
    """A file name made of the session id (anything outside [A-Za-z0-9_.-] replaced)."""
    name = _UNSAFE.sub("_", session_id).lstrip(".") or "session"
    return name + SUFFIX


def write_capture(directory: Path, session_id: str, data: bytes) -> Path:
    """Write ``data`` to a new file ``DIR/<session id>.mitm`` (mode 0600) and return its path."""
    stem = capture_name(session_id).removesuffix(SUFFIX)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(MAX_NAME_ATTEMPTS):
        path = directory / (f"{stem}-{attempt}{SUFFIX}" if attempt else stem + SUFFIX)
        try:
            fd = os.open(path, flags, FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
        except BaseException:
            path.unlink(missing_ok=True)  # no half-written capture (disk full, ...)
            raise
        return path
    raise FileExistsError(f"no free capture file name for session {session_id} in {directory}")
