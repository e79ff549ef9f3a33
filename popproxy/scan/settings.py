"""Scanner configuration: frozen, with every default a named limit or policy list."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from popproxy.scan import limits
from popproxy.scan.verdict import Action

# Scores at or above which each action applies, on the weights table's scale (weights.py): a
# limit signal alone (weight 4.0) tags, a structure the scanner could not read (limit-structure,
# 7.0) defangs, and no single signal (the heaviest weighs 7.0) quarantines.  The trained combiner
# (model.py) scores on the same scale.  The policy's ``scan.thresholds`` defaults too.
TAG_SCORE = 4.0
DEFANG_SCORE = 7.0
QUARANTINE_SCORE = 10.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score at or above which each action applies; the highest matching one wins."""

    tag: float = TAG_SCORE
    defang: float = DEFANG_SCORE
    quarantine: float = QUARANTINE_SCORE

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
# ScanSettings(protected_brands=DEFAULT_PROTECTED_BRANDS + (ProtectedBrand("mybank"),)).
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

# Brands checked only against the sender's display name (not for look-alike link hosts, where
# short or word-like names such as "correos" or "ledger" would match honest hosts): banks,
# postal and parcel services, retailers, security vendors and crypto wallets that public
# phishing reports (APWG, vendor brand-phishing rankings, national CERT warnings) name as the
# usual impersonation targets in the Americas and Europe.  Names that are also surnames or
# everyday words (Norton, Chase, Target, Booking, Ledger, Kraken) are left out: a display name is
# matched word by word.  Each entry is <label> (the owner label
# of its official domains), other official domains, and the words a display name uses.
DEFAULT_SENDER_BRANDS: tuple[ProtectedBrand, ...] = (
    # Banks and payment.
    ProtectedBrand("bankofamerica", ("bofa.com", "ml.com"), ("bank of america",)),
    ProtectedBrand("citibank", ("citi.com", "citigroup.com"), ("citi",)),
    ProtectedBrand("hsbc"),
    ProtectedBrand("barclays", ("barclaycard.co.uk",), ("barclaycard",)),
    ProtectedBrand("santander"),
    ProtectedBrand("bbva"),
    ProtectedBrand("itau", ("itau.com.br", "itau-unibanco.com.br", "itaucard.com.br"),
                   ("itaú", "itaucard", "itaú unibanco")),
    ProtectedBrand("bradesco", ("bradescoseguros.com.br", "bradescocartoes.com.br")),
    ProtectedBrand("bancodobrasil", ("bb.com.br",), ("banco do brasil", "ourocard")),
    ProtectedBrand("caixa", ("caixa.gov.br",), ("caixa econômica", "caixa economica")),
    ProtectedBrand("nubank", ("nu.com.br",)),
    ProtectedBrand("livelo"),
    ProtectedBrand("americanexpress", ("aexp.com", "amex.com"), ("american express", "amex")),
    ProtectedBrand("capitalone", (), ("capital one",)),
    ProtectedBrand("revolut"),
    ProtectedBrand("sparkasse"),
    ProtectedBrand("commerzbank"),
    ProtectedBrand("postbank"),
    ProtectedBrand("rabobank"),
    ProtectedBrand("abnamro", (), ("abn amro",)),
    ProtectedBrand("intesasanpaolo", (), ("intesa sanpaolo",)),
    ProtectedBrand("mercadopago", ("mercadolibre.com", "mercadolivre.com.br"), ("mercado pago",)),
    # Postal and parcel services.
    ProtectedBrand("correios"),
    ProtectedBrand("correos", ("correosexpress.com",)),
    ProtectedBrand("royalmail", (), ("royal mail",)),
    ProtectedBrand("postnl"),
    ProtectedBrand("dpd", ("dpd.de", "dpd.co.uk", "dpdgroup.com")),
    ProtectedBrand(
        "evri", ("myhermes.co.uk", "myhermes.de", "hermesworld.com", "hermes.com"), ("hermes",)
    ),
    ProtectedBrand("colissimo", ("laposte.fr", "laposte.net")),
    ProtectedBrand("chronopost"),
    ProtectedBrand("laposte", (), ("la poste",)),
    ProtectedBrand("posteitaliane", ("poste.it",), ("poste italiane",)),
    ProtectedBrand("canadapost", ("postescanada-canadapost.ca",), ("canada post",)),
    ProtectedBrand("auspost", ("auspost.com.au",), ("australia post",)),
    ProtectedBrand("aramex"),
    # Retail, travel, media and telecoms.
    ProtectedBrand("walmart"),
    ProtectedBrand("costco"),
    ProtectedBrand("lidl"),
    ProtectedBrand("aldi", ("aldi-nord.de", "aldi-sued.de")),
    ProtectedBrand("carrefour"),
    ProtectedBrand("edeka"),
    ProtectedBrand("temu"),
    ProtectedBrand("shein"),
    ProtectedBrand("aliexpress", ("alibaba.com", "aliyun.com")),
    ProtectedBrand("ebay"),
    ProtectedBrand("bestbuy", (), ("best buy",)),
    ProtectedBrand("mercadolivre", ("mercadolibre.com", "mercadopago.com"),
                   ("mercado livre", "mercado libre")),
    ProtectedBrand("airbnb"),
    ProtectedBrand("spotify"),
    ProtectedBrand("siriusxm", ("sirius.com",), ("sirius xm", "siriusxm")),
    ProtectedBrand("whatsapp", ("facebook.com", "meta.com")),
    ProtectedBrand("lufthansa", ("miles-and-more.com",)),
    ProtectedBrand("adac"),
    ProtectedBrand("verizon", ("verizonwireless.com",)),
    ProtectedBrand("vodafone"),
    # Security software (fake renewals) and crypto services.
    ProtectedBrand("mcafee"),
    ProtectedBrand("totalav", (), ("total av",)),
    ProtectedBrand("trezor"),
    ProtectedBrand("opensea"),
    ProtectedBrand("bittrex"),
    ProtectedBrand("kucoin"),
    ProtectedBrand("bybit"),
)

# Prepended to the Subject by the "tag" action when ScanSettings.subject_prefix is left as is.
DEFAULT_SUBJECT_PREFIX = "[SUSPICIOUS]"
# The From of the notice that replaces a quarantined message: a local address, so a reply never
# leaves the site; admins set their own postmaster.
DEFAULT_NOTICE_FROM = "popproxy <postmaster@localhost>"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanSettings:
    """Everything the scanner can be told; build once, share between sessions."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    max_message_bytes: int = limits.MAX_MESSAGE_BYTES
    max_decoded_bytes: int = limits.MAX_DECODED_BYTES
    max_mime_depth: int = limits.MAX_MIME_DEPTH
    max_mime_parts: int = limits.MAX_MIME_PARTS
    max_overflow_bytes: int = limits.MAX_OVERFLOW_BYTES
    max_text_chars: int = limits.MAX_TEXT_CHARS
    max_link_scan_chars: int = limits.MAX_LINK_SCAN_CHARS
    max_links: int = limits.MAX_LINKS  # distinct hosts judged (see link_select)
    time_budget_seconds: float = limits.TIME_BUDGET_SECONDS
    protected_brands: tuple[ProtectedBrand, ...] = DEFAULT_PROTECTED_BRANDS
    # Checked against the sender's display name only (see DEFAULT_SENDER_BRANDS).
    sender_brands: tuple[ProtectedBrand, ...] = DEFAULT_SENDER_BRANDS
    feed_paths: tuple[Path, ...] = ()
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    notice_from: str = DEFAULT_NOTICE_FROM
    check_office_macros: bool = True
    # How signals become a score: "model" (the trained combiner, popproxy/scan/model.json,
    # trained by bench/train_scanner.py) or "weights" (the readable table in weights.py).  The
    # model falls back to the weights when its file is missing or made for other features.
    combiner: Literal["model", "weights"] = "model"
    model_path: Path | None = None  # None: the model shipped in the package
    # What defang does with risky attachments (programs, macro documents, scripts, disk
    # images: popproxy.scan.risky): "keep" their bytes, "strip" them (an inline note in their
    # place) or "replace" them by a text attachment saying what was removed.
    risky_attachments: Literal["keep", "strip", "replace"] = "keep"
