"""Scanner configuration: frozen, with every default a named limit or policy list."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from popproxy.scan import limits
from popproxy.scan.verdict import Action


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score at or above which each action applies; the highest matching one wins."""

    tag: float = 4.0
    defang: float = 7.0
    quarantine: float = 10.0

    def action_for(self, score: float) -> Action:
        """Map a score to an action (quarantine > defang > tag > pass)."""
        if score >= self.quarantine:
            return "quarantine"
        if score >= self.defang:
            return "defang"
        if score >= self.tag:
            return "tag"
        return "pass"


@dataclass(frozen=True, slots=True)
class ProtectedBrand:
    """A brand whose look-alikes are flagged.

    Attributes:
        name: the brand label as it appears in its domains ("paypal").
        domains: registrable domains that legitimately belong to the brand, beyond
            ``<name>.<any public suffix>``, which is always accepted.
        aliases: other words naming the brand or its products in a sender name or a host
            ("outlook" for microsoft), matched as whole words.
    """

    name: str
    domains: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


# A policy list of commonly impersonated brands (APWG and vendor phishing reports name these year
# after year).  Deliberately short and general: operators add their own bank with
# ScanConfig(protected_brands=DEFAULT_PROTECTED_BRANDS + (ProtectedBrand("mybank"),)).
DEFAULT_PROTECTED_BRANDS: tuple[ProtectedBrand, ...] = (
    ProtectedBrand("paypal", ("paypalobjects.com", "paypal-community.com")),
    ProtectedBrand(
        "microsoft",
        (
            "live.com", "outlook.com", "office.com", "office365.com", "microsoftonline.com",
            "sharepoint.com", "onedrive.com", "1drv.ms", "windows.net", "azure.com", "msn.com",
            "hotmail.com", "bing.com", "skype.com", "xbox.com", "msauth.net", "msftauth.net",
            "microsoft365.com", "onmicrosoft.com",
        ),
        # Not "outlook" or "teams": ordinary words in newsletter names and hosts.
        ("office365", "office 365", "microsoft365", "onedrive", "sharepoint", "hotmail"),
    ),
    ProtectedBrand(
        "apple", ("icloud.com", "me.com", "mac.com", "apple.news", "itunes.com"),
        ("icloud", "itunes", "apple id"),
    ),
    ProtectedBrand(
        "google",
        (
            "gmail.com", "youtube.com", "googleapis.com", "googleusercontent.com", "gstatic.com",
            "googlegroups.com", "googlemail.com", "goo.gl", "g.co", "google-analytics.com",
            "googletagmanager.com", "googleadservices.com", "doubleclick.net", "blogger.com",
        ),
        ("gmail",),
    ),
    ProtectedBrand(
        "amazon",
        ("amazonaws.com", "amazon-adsystem.com", "media-amazon.com", "ssl-images-amazon.com",
         "amazonses.com", "a2z.com", "aws.amazon.com", "primevideo.com"),
    ),
    ProtectedBrand("netflix", ("nflxext.com", "nflximg.net", "nflxso.net")),
    ProtectedBrand("facebook", ("fb.com", "fbcdn.net", "meta.com", "instagram.com")),
    ProtectedBrand("instagram", ("cdninstagram.com", "facebook.com")),
    ProtectedBrand("linkedin", ("licdn.com",)),
    ProtectedBrand("dropbox", ("dropboxusercontent.com", "db.tt")),
    ProtectedBrand("docusign", ("docusign.net",)),
    ProtectedBrand("adobe", ("adobelogin.com", "acrobat.com", "typekit.net")),
    ProtectedBrand("wellsfargo", ("wf.com",), ("wells fargo",)),
    ProtectedBrand("dhl", ("dhl.de", "dpdhl.com", "deutschepost.de")),
    ProtectedBrand("fedex"),
    ProtectedBrand("usps", ("usps.gov", "informeddelivery.com")),
    ProtectedBrand("coinbase"),
    ProtectedBrand("binance"),
    ProtectedBrand("metamask", ("consensys.net", "consensys.io")),
    ProtectedBrand("trustwallet", ("trustwallet.com",), ("trust wallet",)),
)

# Prepended to the Subject by the "tag" action when ScanConfig.subject_prefix is left as is.
DEFAULT_SUBJECT_PREFIX = "[SUSPICIOUS]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanConfig:
    """Everything the scanner can be told; build once, share between sessions."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    max_message_bytes: int = limits.MAX_MESSAGE_BYTES
    max_decoded_bytes: int = limits.MAX_DECODED_BYTES
    max_mime_depth: int = limits.MAX_MIME_DEPTH
    max_mime_parts: int = limits.MAX_MIME_PARTS
    max_text_chars: int = limits.MAX_TEXT_CHARS
    max_links: int = limits.MAX_LINKS
    time_budget_seconds: float = limits.TIME_BUDGET_SECONDS
    protected_brands: tuple[ProtectedBrand, ...] = DEFAULT_PROTECTED_BRANDS
    feed_paths: tuple[Path, ...] = ()
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    notice_from: str = "popproxy <postmaster@localhost>"
    check_office_macros: bool = True
