"""A minimal OLE compound file writer ([MS-CFB] version 3), for the .msg tests only.

olefile reads compound files but cannot create one, and no maintained package writes .msg
files, so the tests build theirs here: 512-byte sectors, streams under 4,096 bytes in the mini
stream (as the format requires), one FAT of at most 109 sectors (files up to ~7 MB), every
storage's children chained through their right-sibling links (a degenerate but valid tree).
"""

from __future__ import annotations

import struct

_SECTOR = 512
_MINI = 64
_CUTOFF = 4096
_FREE, _END, _FAT_SECT, _NONE = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_STORAGE, _STREAM, _ROOT = 1, 2, 5


def _pad(data: bytes, size: int) -> bytes:
    return data + b"\0" * (-len(data) % size)


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name, self.kind, self.data = name, kind, data
        self.children: list[_Entry] = []
        self.start, self.size = _END, 0
        self.index = 0
        self.right = _NONE  # the next child of the same storage


def compound_file(streams: dict[str, bytes]) -> bytes:
    """A compound file holding ``streams`` ("storage/stream" paths; storages made as needed)."""
    root = _Entry("Root Entry", _ROOT)
    for path, data in streams.items():
        parent = root
        *storages, name = path.split("/")
        for storage in storages:
            found = next((c for c in parent.children if c.name == storage), None)
            if found is None:
                found = _Entry(storage, _STORAGE)
                parent.children.append(found)
            parent = found
        parent.children.append(_Entry(name, _STREAM, data))
    entries = _flatten(root)
    return _layout(root, entries)


def _flatten(root: _Entry) -> list[_Entry]:
    out = [root]
    pending = [root]
    while pending:
        entry = pending.pop(0)
        for child in entry.children:
            child.index = len(out)
            out.append(child)
            pending.append(child)
        for a, b in zip(entry.children, entry.children[1:], strict=False):
            a.right = b.index
    return out


def _layout(root: _Entry, entries: list[_Entry]) -> bytes:
    mini_stream, mini_fat = b"", []
    big: list[_Entry] = []
    for entry in entries:
        if entry.kind != _STREAM:
            continue
        entry.size = len(entry.data)
        if entry.size >= _CUTOFF:
            big.append(entry)
        elif entry.size:
            entry.start = len(mini_stream) // _MINI
            count = -(-entry.size // _MINI)
            mini_fat += [entry.start + i + 1 for i in range(count - 1)] + [_END]
            mini_stream += _pad(entry.data, _MINI)
    directory = b"".join(_dir_entry(e) for e in entries)  # sizes and starts patched below
    blobs: list[tuple[str, bytes]] = [
        ("dir", _pad(directory, _SECTOR)),
        ("minifat", _pad(b"".join(struct.pack("<I", n) for n in mini_fat), _SECTOR)),
        ("ministream", _pad(mini_stream, _SECTOR)),
        *((f"big{i}", _pad(e.data, _SECTOR)) for i, e in enumerate(big)),
    ]
    data_sectors = sum(len(b) // _SECTOR for _, b in blobs)
    fat_sectors = 1
    while fat_sectors * (_SECTOR // 4) < data_sectors + fat_sectors:
        fat_sectors += 1
    assert fat_sectors <= 109, "test files are kept under ~7 MB (no DIFAT sectors)"
    fat: list[int] = [_FAT_SECT] * fat_sectors
    starts: dict[str, int] = {}
    for key, blob in blobs:
        count = len(blob) // _SECTOR
        starts[key] = len(fat) if count else _END
        fat += [len(fat) + i + 1 for i in range(count - 1)] + ([_END] if count else [])
    fat += [_FREE] * (-len(fat) % (_SECTOR // 4))
    root.start, root.size = starts["ministream"], len(mini_stream)
    for i, entry in enumerate(big):
        entry.start = starts[f"big{i}"]
    directory = _pad(b"".join(_dir_entry(e) for e in entries), _SECTOR)
    blobs[0] = ("dir", directory)
    header = _header(fat_sectors, starts["dir"], starts["minifat"], len(blobs[1][1]) // _SECTOR)
    body = b"".join(struct.pack("<I", n) for n in fat) + b"".join(b for _, b in blobs)
    return header + body


def _header(fat_sectors: int, dir_start: int, minifat_start: int, minifat_count: int) -> bytes:
    difat = list(range(fat_sectors)) + [_FREE] * (109 - fat_sectors)
    head = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 16
    head += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\0" * 6
    head += struct.pack("<IIIIIIIII", 0, fat_sectors, dir_start, 0, _CUTOFF,
                        minifat_start if minifat_count else _END, minifat_count, _END, 0)
    return head + b"".join(struct.pack("<I", n) for n in difat)


def _dir_entry(entry: _Entry) -> bytes:
    name = entry.name.encode("utf-16-le") + b"\0\0"
    child = entry.children[0].index if entry.children else _NONE
    return (
        name.ljust(64, b"\0")
        + struct.pack("<HBB", len(name), entry.kind, 1)
        + struct.pack("<III", _NONE, entry.right, child)
        + b"\0" * 16 + b"\0" * 4 + b"\0" * 16
        + struct.pack("<IQ", entry.start, entry.size)
    )
