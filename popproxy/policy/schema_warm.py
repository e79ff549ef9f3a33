"""``upstreams.*.warm_login``: how ``popproxy warm`` logs in to a mailbox without its password.

A master user (Dovecot: ``auth_master_user_separator``, a ``master = yes`` passdb) logs in as
``USER <user><separator><master_user>`` with the master password; the upstream then opens
``<user>``'s mailbox.  The password is read from ``password_file`` when ``warm`` runs: it is
never part of the loaded policy (which is compared, summarised and may be printed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator

from popproxy.policy.schema_base import Model

# One visible ASCII character that is not a space: the whole login name must stay one POP3
# argument (RFC 1939 section 3: arguments are separated by single spaces).
SEPARATOR = re.compile(r"[!-~]")
# A login name part: visible ASCII only, so USER stays one argument on one line.
NAME = re.compile(r"[!-~]+")


class WarmLogin(Model):
    """The master-user login ``popproxy warm`` uses on this upstream (docs/policy.md)."""

    # The upstream's master user; warm logs in as USER <user><separator><master_user>, one
    # POP3 argument (visible ASCII, no spaces: RFC 1939 section 3).
    master_user: Annotated[str, Field(min_length=1, max_length=200)]
    # Owner-readable file holding the master password (its first line; the line end is cut).
    password_file: Path
    # Dovecot's default is "*" (auth_master_user_separator); it must match the upstream's.
    separator: str = "*"

    @field_validator("master_user")
    @classmethod
    def _visible(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError("must be visible ASCII without spaces (one POP3 argument)")
        return v

    @field_validator("separator")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if not SEPARATOR.fullmatch(v):
            raise ValueError("must be one visible ASCII character, e.g. '*'")
        return v

    def login_name(self, user: str) -> str:
        """The USER argument that opens ``user``'s mailbox as the master user."""
        return f"{user}{self.separator}{self.master_user}"
