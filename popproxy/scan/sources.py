"""Where the scan CLI and the bench read messages from: .eml files, directories, mbox, Maildir."""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# RFC 4155: an mbox file starts with a "From " separator line.
_MBOX_MAGIC = b"From "
_MAILDIR_SUBDIRS = ("cur", "new")


@dataclass(frozen=True, slots=True)
class Item:
    """One message to scan (``data``) or a path that could not be read (``error``)."""

    path: str
    data: bytes | None = None
    error: str | None = None


def is_maildir(path: Path) -> bool:
    """A directory with cur/ and new/ (tmp/ holds deliveries in progress and is skipped)."""
    return path.is_dir() and all((path / d).is_dir() for d in _MAILDIR_SUBDIRS)


def is_mbox(path: Path) -> bool:
    """A regular file that starts with an mbox "From " line."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_MBOX_MAGIC)) == _MBOX_MAGIC
    except OSError:
        return False


def iter_items(paths: list[str]) -> Iterator[Item]:
    """Every message under the given paths, in a stable order; unreadable paths as errors."""
    for name in paths:
        path = Path(name)
        if not path.exists():
            yield Item(name, error="no such file or directory")
        elif is_maildir(path):
            for sub in _MAILDIR_SUBDIRS:
                yield from _files(sorted(p for p in (path / sub).iterdir() if p.is_file()))
        elif path.is_dir():
            yield from _directory(path)
        else:
            yield from _file(path)


def _directory(path: Path) -> Iterator[Item]:
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        yield Item(str(path), error=exc.strerror or type(exc).__name__)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if is_maildir(entry) or entry.is_dir():
            yield from iter_items([str(entry)])
        elif entry.is_file():
            yield from _file(entry)


def _files(paths: list[Path]) -> Iterator[Item]:
    for p in paths:
        yield from _file(p)


def _file(path: Path) -> Iterator[Item]:
    if is_mbox(path):
        yield from _mbox(path)
        return
    try:
        yield Item(str(path), data=path.read_bytes())
    except OSError as exc:
        yield Item(str(path), error=exc.strerror or type(exc).__name__)


def _mbox(path: Path) -> Iterator[Item]:
    try:
        box = mailbox.mbox(path, create=False)
        keys = box.keys()
    except (OSError, mailbox.Error) as exc:
        yield Item(str(path), error=str(exc) or type(exc).__name__)
        return
    try:
        for index, key in enumerate(keys, start=1):
            yield Item(f"{path}:{index}", data=box.get_bytes(key))
    finally:
        box.close()
