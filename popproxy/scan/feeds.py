"""Blocklist feeds: plain host-list files, reloaded when the file changes.

Format: one host per line, ``#`` starts a comment, blank lines ignored (the format of OpenPhish
host exports and most DNS blocklists).  A feed never raises from a look-up: a file that vanishes
or becomes unreadable keeps the hosts last loaded, because a broken feed update must not stop
mail from being scanned.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from popproxy.scan import hosts
from popproxy.scan.lists import PATH_TENANTED_HOSTS, SHARED_REGISTRABLE

# A feed line longer than a DNS name (RFC 1035 section 2.3.4: 255 octets) is not a host.
_MAX_HOST_CHARS = 255

FeedMatch = Literal["host", "domain", "platform"]


@dataclass(frozen=True, slots=True)
class FeedHit:
    """A link host found in a feed.

    ``match`` is "host" when the host or a parent is listed, "domain" when another host of the
    same registrable domain is listed, "platform" when the listed entry is a shared host whose
    tenants live in the URL path (bit.ly, storage.googleapis.com): weak evidence.
    """

    feed: str
    entry: str
    match: FeedMatch


def parse_hosts(lines: Iterable[str]) -> frozenset[str]:
    """Parse feed lines into lower-case ASCII hosts (comments and junk dropped)."""
    out: set[str] = set()
    for raw in lines:
        line = raw.split("#", 1)[0].strip().lower().rstrip(".")
        if not line or len(line) > _MAX_HOST_CHARS or " " in line or "/" in line:
            continue
        out.add(hosts.to_ascii(line))
    return frozenset(out)


class HostFeed:
    """One blocklist file; :meth:`refresh` reloads it when its mtime changes."""

    def __init__(self, path: Path | str, *, strict: bool = True) -> None:
        """Load the file.

        Raises:
            OSError: the file cannot be read at start-up (a typo in a path should be loud);
                with ``strict=False`` the feed starts empty instead, until a refresh loads it.
        """
        self.path = Path(path)
        self.name = self.path.name
        self._mtime_ns = -1
        # SHA-256 prefix of the bytes loaded: equal on every host with the same file, whatever
        # its mtime (cached verdicts shared between instances depend on it).
        self.digest = ""
        self._hosts: frozenset[str] = frozenset()
        self._domains: frozenset[str] = frozenset()
        if strict:
            self._load(os.stat(self.path).st_mtime_ns)
        else:
            self.refresh()

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def mtime_ns(self) -> int:
        """The mtime of the file as last loaded."""
        return self._mtime_ns

    def refresh(self) -> bool:
        """Reload the file if its mtime changed; keep the old hosts on any error.

        Returns:
            True when the hosts were reloaded.
        """
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._mtime_ns:
                return False
            self._load(mtime)
        except (OSError, UnicodeError):
            return False
        return True

    def _load(self, mtime_ns: int) -> None:
        data = self.path.read_bytes()  # one read: the digest is of exactly the hosts loaded
        loaded = parse_hosts(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                              errors="replace"))
        self._hosts = loaded
        # Registrable domains of listed hosts, except shared ones: listing one weebly.com
        # customer must not list all of them.
        self._domains = frozenset(
            d for d in (hosts.registrable(h) for h in loaded) if d not in SHARED_REGISTRABLE
        )
        self._mtime_ns = mtime_ns
        self.digest = hashlib.sha256(data).hexdigest()[:16]

    def lookup(self, host: str) -> FeedHit | None:
        """Find a lower-case ASCII host in the feed; None when absent."""
        for candidate in hosts.parents(host):
            if candidate in self._hosts:
                weak = candidate in PATH_TENANTED_HOSTS or candidate in SHARED_REGISTRABLE
                return FeedHit(self.name, candidate, "platform" if weak else "host")
        domain = hosts.registrable(host)
        if domain in self._domains:
            return FeedHit(self.name, domain, "domain")
        return None


def load_feeds(paths: Iterable[Path | str]) -> tuple[HostFeed, ...]:
    """Load each feed file.

    Raises:
        OSError: a file cannot be read.
    """
    return tuple(HostFeed(p) for p in paths)


def load_feeds_lenient(paths: Iterable[Path | str]) -> tuple[HostFeed, ...]:
    """Like :func:`load_feeds`, but a file that cannot be read now starts empty and is loaded
    by a later :meth:`HostFeed.refresh`: for scan workers started while the proxy runs, where
    a feed briefly missing (a non-atomic update) must not stop every new worker."""
    return tuple(HostFeed(p, strict=False) for p in paths)
