"""``popproxy check-config [--dump] PATH...``: validate policies and every file they refer to.

Exit 0 when each policy loads and its certificates, keys, CA files, feeds, directories and the
audit log are usable (warnings, such as a certificate expiring within two weeks, are printed
but do not fail); exit 1 otherwise.  ``--dump`` prints the effective policy (defaults filled
in, paths absolute) like ``nginx -T`` or ``doveconf -n``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from popproxy.checks import Clock, load_checked, utcnow
from popproxy.policy import ConfigError, Policy, load_config, policy_files
from popproxy.policy.reference import dump as dump_policy

DEFAULT_PATH = Path("policies")


def default_path_hint(path: Path) -> str:
    """Said under an unreadable policy that is the default: ``policies`` is relative to the
    current directory, which an admin outside the checkout does not expect."""
    if path == DEFAULT_PATH and not path.exists():
        return (f"(no ./{DEFAULT_PATH} in {Path.cwd()}: give --config PATH, the policy file or "
                "directory popproxy run uses)")
    return ""


def summary(config: Policy) -> str:
    """One line: listeners, upstreams, routes and user rules."""
    listeners = ", ".join(f"{lst.name}={lst.host}:{lst.port}/{lst.mode}"
                          for lst in config.listeners)
    return (f"listeners: {listeners}; upstreams: {1 + len(config.upstreams)}; "
            f"routes: {len(config.routes)}; user rules: {len(config.users)}")


def check_one(path: Path, dump: bool = False, files: bool = True, out: TextIO | None = None,
              err: TextIO | None = None, clock: Clock = utcnow) -> int:
    """Check the policy at ``path`` (``files``: and the files it names); 0 if usable, else 1."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        if files:
            config, findings = load_checked(path, clock, strict=True)
        else:
            config, findings = load_config(path), []
    except ConfigError as exc:
        print(f"{path}: INVALID", file=err)
        for detail in [*exc.details, default_path_hint(path)]:
            if detail:
                print(f"  {detail}", file=err)
        return 1
    for warning in findings:
        print(f"{path}: WARNING {warning}", file=err)
    if dump:
        sources = ", ".join(str(p) for p in policy_files(path))
        out.write(f"# effective policy of {path} ({sources}), defaults filled in\n")
        out.write(dump_policy(config))
    else:
        names = ", ".join(p.name for p in policy_files(path))
        print(f"{path}: OK ({names}) {summary(config)}", file=out)
    return 0


def check_config(paths: list[Path], dump: bool = False, files: bool = True) -> int:
    """Validate each path as its own policy; print OK + summary (or the dump) or the errors."""
    status = 0
    for path in paths or [DEFAULT_PATH]:
        status = max(status, check_one(path, dump, files))
    return status


def startup_problem(path: Path) -> tuple[Policy | None, str]:
    """For ``run``: the checked policy, or one line saying what is wrong and how to see all."""
    try:
        config, findings = load_checked(path)
    except ConfigError as exc:
        more = len(exc.details) - 1
        rest = f" (+{more} more: popproxy check-config {path})" if more else ""
        return None, f"{exc.details[0]}{rest}"
    for warning in findings:
        print(f"popproxy: warning: {warning}", file=sys.stderr)
    return config, ""
