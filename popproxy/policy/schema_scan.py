"""The policy's ``scan`` section: pydantic models, and the one conversion to ``ScanSettings``.

Every default is the scanner's own named constant (``popproxy/scan/limits.py``,
``popproxy/scan/settings.py``), so a value is declared once and ``popproxy scan`` judges like the
proxy does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from popproxy.policy.durations import Duration
from popproxy.policy.schema_base import Model
from popproxy.policy.schema_redis import SharedRedis
from popproxy.scan import limits, settings
from popproxy.scan.settings import ScanSettings, Thresholds

log = logging.getLogger("popproxy.config")

# scan.evidence_ttl: verdicts of messages still listed are kept this long (a safety bound, see
# the field), at most three years.
EVIDENCE_TTL = 180 * 86400.0
MAX_EVIDENCE_TTL = 3 * 365 * 86400
# scan.listing_budget: seconds a session's first STAT/LIST may spend judging messages it has no
# verdict for (newest first); the rest are listed at the upstream's size and judged at RETR.
# Well under common client timeouts (Thunderbird and Outlook give a server 60 s); at most 10
# minutes, RFC 1939 section 3's shortest idle timeout.
LISTING_BUDGET = 20.0
MAX_LISTING_BUDGET = 600.0


class ScanThresholds(Model):
    """Score at or above which each action applies (the highest wins)."""

    # From here: verdict headers and the Subject prefix.  A message the scanner could not read
    # whole (a limit-* signal) is tagged whatever this is; limit-structure also defangs.
    # A change re-scores cached verdicts: only messages whose action changes are downloaded
    # again (docs/scanning.md).
    tag: Annotated[float, Field(ge=0)] = settings.TAG_SCORE
    # Tagged, and links made inert (docs/scanning.md, "Defang").
    defang: Annotated[float, Field(ge=0)] = settings.DEFANG_SCORE
    # Held in quarantine_dir, the reader gets a notice (the heaviest single signal weighs 7).
    quarantine: Annotated[float, Field(ge=0)] = settings.QUARANTINE_SCORE


class Scan(SharedRedis):
    """Message scanning of RETR/TOP (see docs/scanning.md for the POP3 consistency design).

    Verdicts are shared by several instances through ``redis_url``, ``redis_sentinel`` or
    ``redis_cluster`` (docs/scaling.md); none set: lockout's Redis if it names one, else each
    instance keeps its own verdicts."""

    # false: messages are relayed as the upstream sends them, unjudged; switched on again,
    # verdicts still cached (evidence_ttl) are used.  A change of time_budget, subject_prefix
    # or notice_from has every message downloaded and judged again.
    enabled: bool = True
    thresholds: ScanThresholds = ScanThresholds()
    # "model": the trained combiner shipped in the package (popproxy/scan/model.json), on the
    # same score scale as the thresholds, with the weights table as a floor; "weights": the
    # readable weights table alone.  The model beats the table on the time split
    # (bench/scan_quality.py, docs/scanning.md).
    combiner: Literal["model", "weights"] = "model"
    # Plain host-list blocklists (one host per line, # comments), re-read when they change.
    feeds: tuple[Path, ...] = ()
    # Put before the Subject of tagged and defanged messages (printable ASCII; "" for none);
    # where the size must not change, it overwrites the Subject's start (docs/scanning.md).
    subject_prefix: str = settings.DEFAULT_SUBJECT_PREFIX
    # When defanging: keep risky attachments (programs, macro documents, scripts, disk
    # images), strip them (an inline note says what was removed) or replace them by a text
    # attachment saying so.  An opaque .bin is not risky by its name (docs/scanning.md).
    risky_attachments: Literal["keep", "strip", "replace"] = "keep"
    # Larger messages are judged on their first max_message_bytes (limit-size: at least tag),
    # never held whole in memory; judged defang or worse, they are quarantined.
    max_message_bytes: Annotated[int, Field(ge=1024)] = limits.MAX_MESSAGE_BYTES
    # Seconds one message may be judged; past it the message is unjudged (fail_mode decides,
    # remembered like a verdict); a worker that has not answered 1 s later is killed.
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
    # Held messages older than this are removed (at start, then hourly, and by `popproxy
    # quarantine purge`): "30d" or seconds.  Unset: kept until purged by hand (held mail is
    # never deleted unless an admin said so).
    quarantine_retention: Duration | None = None
    # From: of the notice a reader gets instead of a quarantined message: an address they know
    # (the postmaster or helpdesk who can release it).
    notice_from: str = settings.DEFAULT_NOTICE_FROM
    # Safety TTL of a cached verdict and its evidence, here and in Redis.  Entries of messages
    # the upstream no longer lists are dropped at the next listing; this bounds the rest
    # (mailboxes nobody reads any more).  Long: a leave-on-server mailbox must not be
    # downloaded again just because its verdicts aged (docs/scanning.md, docs/scaling.md).
    evidence_ttl: Annotated[float, Field(ge=60, le=MAX_EVIDENCE_TTL)] = EVIDENCE_TTL
    # Seconds the first listing of a session may spend judging (docs/scanning.md, "Listing
    # budget"): a big mailbox answers STAT/LIST in time, what is left is judged at RETR/TOP and
    # delivered at the size listed (size-preserving defang, padded quarantine notice).
    listing_budget: Annotated[float, Field(gt=0, le=MAX_LISTING_BUDGET)] = LISTING_BUDGET
    # Deprecated name of evidence_ttl (it was 7 days and made every leave-on-server mailbox be
    # downloaded weekly): still honoured, with a warning, so existing policies keep loading.
    verdict_ttl: Annotated[float, Field(ge=60, le=365 * 86400)] | None = None

    @field_validator("subject_prefix")
    @classmethod
    def _ascii_prefix(cls, v: str) -> str:
        # Written into the Subject as bytes: a header's raw text is printable ASCII (RFC 5322
        # section 2.2); a line break would start a header of its own.
        if any(not " " <= c <= "~" for c in v):
            raise ValueError("printable ASCII only (no line breaks, no accented letters)")
        return v

    @field_validator("notice_from")
    @classmethod
    def _one_line_from(cls, v: str) -> str:
        # The notice's From: header (non-ASCII names are RFC 2047-encoded when it is built).
        if not v.strip() or any(c < " " or c == "\x7f" for c in v):
            raise ValueError("one line: an address, with a name if you like")
        return v

    @model_validator(mode="after")
    def _deprecated_ttl(self) -> Scan:
        if self.verdict_ttl is not None:
            if "evidence_ttl" in self.model_fields_set:
                raise ValueError("set scan.evidence_ttl only (scan.verdict_ttl is its old name)")
            log.warning("scan.verdict_ttl is deprecated: rename it scan.evidence_ttl (default "
                        "180 days; entries of deleted messages are dropped at listing)")
        return self

    @property
    def cache_ttl(self) -> float:
        """Seconds a cached verdict lives: ``evidence_ttl``, or the deprecated ``verdict_ttl``."""
        return self.verdict_ttl if self.verdict_ttl is not None else self.evidence_ttl

    def to_settings(self) -> ScanSettings:
        """The scanner's settings from this section: the one conversion (the proxy's process and
        its scan workers both build their scanner from it)."""
        return ScanSettings(
            thresholds=Thresholds(self.thresholds.tag, self.thresholds.defang,
                                  self.thresholds.quarantine),
            max_message_bytes=self.max_message_bytes, time_budget_seconds=self.time_budget,
            feed_paths=self.feeds, subject_prefix=self.subject_prefix,
            notice_from=self.notice_from, combiner=self.combiner,
            risky_attachments=self.risky_attachments,
        )
