"""Message scanner: sans-io, pure functions from message bytes to a verdict and an action.

Pipeline: bytes -> bounded MIME walk (:mod:`.mime`) -> decoded text/HTML (:mod:`.textdecode`,
:mod:`.extract`) -> links and attachments -> signals (:mod:`.link_rules`, :mod:`.attachments`,
:mod:`.lures`, :mod:`.content`, :mod:`.addresses` on :mod:`.header_facts`) -> verdict
(:mod:`.scoring`) -> modified bytes (:mod:`.actions`).

Nothing here imports asyncio, socket or ssl; the proxy calls :meth:`Scanner.scan` and
:func:`apply_action` on whole messages.
"""

from popproxy.scan.actions import (
    RENDER_VERSION,
    apply_action,
    quarantine_id_for,
    quarantine_notice,
    tag_message,
)
from popproxy.scan.defang import defang_message
from popproxy.scan.feeds import FeedHit, HostFeed, load_feeds
from popproxy.scan.scanner import Scanner
from popproxy.scan.settings import (
    DEFAULT_PROTECTED_BRANDS,
    DEFAULT_SENDER_BRANDS,
    DEFAULT_SUBJECT_PREFIX,
    ProtectedBrand,
    ScanSettings,
    Thresholds,
)
from popproxy.scan.verdict import Action, Signal, UnscannedCause, Verdict

__all__ = [
    "DEFAULT_PROTECTED_BRANDS",
    "DEFAULT_SENDER_BRANDS",
    "DEFAULT_SUBJECT_PREFIX",
    "RENDER_VERSION",
    "Action",
    "FeedHit",
    "HostFeed",
    "ProtectedBrand",
    "ScanSettings",
    "Scanner",
    "Signal",
    "Thresholds",
    "UnscannedCause",
    "Verdict",
    "apply_action",
    "defang_message",
    "load_feeds",
    "quarantine_id_for",
    "quarantine_notice",
    "tag_message",
]
