"""Relative paths in a policy are relative to the policy, not to the working directory.

``state_dir: state`` or ``cert: tls/pop3.crt`` must mean the same file whether popproxy is
started from a shell in the checkout, by systemd (``WorkingDirectory=/var/lib/popproxy``) or by
``check-config`` from anywhere, as nginx resolves ``include`` and Dovecot ``<file`` paths
against the configuration's directory.  The base is the policy's directory: the directory
itself for a directory of ``*.yaml`` files, else the file's parent.

Every ``Path`` field of every section is rebased (certificates, keys, CA files, feeds, the
quarantine directory, secret and password files, ``state_dir``), found by walking the models so
that a path field added later is covered without a list to keep in step; the audit log is a
string (``-`` means standard error) and is rebased by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

STDERR_AUDIT_LOG = "-"  # observability.audit_log: "-" is standard error, not a file


def shown(path: Path) -> Path:
    """``path`` as a message shows it: its directory resolved (``policies/../tls`` as the kernel
    reads it, symlinked directories too), the file's own name kept: Let's Encrypt's ``live/``
    names link to numbered archive files, and the configured name is the one to recognise."""
    return path.parent.resolve() / path.name


def policy_base(path: Path) -> Path:
    """The directory relative paths of the policy at ``path`` are resolved against."""
    return (path if path.is_dir() else path.parent).absolute()


def _rebase_value(value: Any, base: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else base / value
    if isinstance(value, BaseModel):
        return rebase(value, base)
    if isinstance(value, tuple):
        return tuple(_rebase_value(item, base) for item in value)
    if isinstance(value, dict):
        return {key: _rebase_value(item, base) for key, item in value.items()}
    return value


def rebase(model: M, base: Path) -> M:
    """``model`` with every relative ``Path`` in it (at any depth) made relative to ``base``."""
    update: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        new = _rebase_value(value, base)
        if new is not value and new != value:
            update[name] = new
    audit = getattr(model, "audit_log", None)
    if isinstance(audit, str) and audit != STDERR_AUDIT_LOG and not Path(audit).is_absolute():
        update["audit_log"] = str(base / audit)
    return model.model_copy(update=update) if update else model
