"""The policy's ``scan`` section: pydantic models, and the one conversion to ``ScanSettings``.

Every default is the scanner's own named constant (``popproxy/scan/limits.py``,
``popproxy/scan/settings.py``), so a value is declared once and ``popproxy scan`` judges like the
proxy does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from popproxy.policy.schema_base import Model, check_redis_url
from popproxy.scan import limits, settings
from popproxy.scan.settings import ScanSettings, Thresholds


class ScanThresholds(Model):
    """Score at or above which each action applies (the highest wins)."""

    tag: Annotated[float, Field(ge=0)] = settings.TAG_SCORE
    defang: Annotated[float, Field(ge=0)] = settings.DEFANG_SCORE
    quarantine: Annotated[float, Field(ge=0)] = settings.QUARANTINE_SCORE


class Scan(Model):
    """Message scanning of RETR/TOP (see docs/scanning.md for the POP3 consistency design)."""

    enabled: bool = True
    thresholds: ScanThresholds = ScanThresholds()
    # "model": the trained combiner shipped in the package (popproxy/scan/model.json), on the
    # same score scale as the thresholds, with the weights table as a floor; "weights": the
    # readable weights table alone.  The model beats the table on the time split
    # (bench/scan_quality.py, docs/scanning.md).
    combiner: Literal["model", "weights"] = "model"
    # Plain host-list blocklists (one host per line, # comments), re-read when they change.
    feeds: tuple[Path, ...] = ()
    subject_prefix: str = settings.DEFAULT_SUBJECT_PREFIX
    # Larger messages are not parsed; they get the fail mode's treatment without being held.
    max_message_bytes: Annotated[int, Field(ge=1024)] = limits.MAX_MESSAGE_BYTES
    time_budget: Annotated[float, Field(gt=0, le=600)] = limits.TIME_BUDGET_SECONDS
    # Scanner over budget or failing: "open" delivers the message with fail_open_action,
    # "closed" quarantines it.
    fail_mode: Literal["open", "closed"] = "open"
    # What "open" does with a message that could not be judged (over the time budget, a
    # crashed or killed scan): it is suspicious, not clean, so it is delivered with its links
    # made inert ("defang") or at least marked ("tag"); the timeout is remembered like a verdict.
    fail_open_action: Literal["tag", "defang"] = "defang"
    # Scan worker processes (scans and renders never run in the proxy's event loop); unset:
    # one per usable CPU, at least 2, so one slow message never holds every scan up.
    workers: Annotated[int, Field(ge=1, le=256)] | None = None
    quarantine_dir: Path | None = None  # default: <state_dir>/quarantine
    notice_from: str = settings.DEFAULT_NOTICE_FROM
    # Verdicts shared by several instances (docs/scaling.md); unset: lockout.redis_url's Redis
    # if that is set, else each instance keeps its own verdicts.
    redis_url: str | None = None
    # How long a verdict stays in Redis after it was written: until the instances that serve
    # the mailbox have their own copy (memory per day of TTL: docs/scaling.md).
    verdict_ttl: Annotated[float, Field(ge=60, le=365 * 86400)] = 7 * 86400.0

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        return check_redis_url(v)

    def to_settings(self) -> ScanSettings:
        """The scanner's settings from this section: the one conversion (the proxy's process and
        its scan workers both build their scanner from it)."""
        return ScanSettings(
            thresholds=Thresholds(self.thresholds.tag, self.thresholds.defang,
                                  self.thresholds.quarantine),
            max_message_bytes=self.max_message_bytes, time_budget_seconds=self.time_budget,
            feed_paths=self.feeds, subject_prefix=self.subject_prefix,
            notice_from=self.notice_from, combiner=self.combiner,
        )
