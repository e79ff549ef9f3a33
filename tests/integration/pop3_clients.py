"""The real POP3 clients of the integration tests, as one-liners: poplib and curl."""

from __future__ import annotations

import poplib
import subprocess

from tests.support.tools import require_tool


def login(port: int, user: str = "scan", password: str = "scanpw") -> poplib.POP3:
    """A poplib session logged in with USER/PASS."""
    client = poplib.POP3("127.0.0.1", port, timeout=60)
    client.user(user)
    client.pass_(password)
    return client


def listing(client: poplib.POP3) -> dict[int, int]:
    """LIST as {number: octets}."""
    _, lines, _ = client.list()
    return {int(n): int(size) for n, size in (line.split() for line in lines)}


def curl(port: int, path: str = "", user: str = "scan:scanpw") -> bytes:
    """One curl POP3 session: LIST with no path, RETR n with path n."""
    require_tool("curl")
    return subprocess.run(["curl", "-s", "--max-time", "60", "-u", user,
                           f"pop3://127.0.0.1:{port}/{path}"],
                          capture_output=True, timeout=90, check=True).stdout


def curl_sizes(port: int, user: str = "scan:scanpw") -> dict[int, int]:
    """curl's LIST as {number: octets}."""
    return {int(n): int(size) for n, size in (line.split() for line in
                                               curl(port, "", user).decode().splitlines())}
