"""Lure wording: the stock phrases of phishing and scams, one :class:`Lure` per category.

The phrase lists are the stock wording of phishing and scams as described in public guidance
(CISA, NCSC, APWG reports, FTC/FBI advance-fee fraud warnings, postal services' and crypto
wallets' own scam notices): requests to verify or re-enter credentials, threats of suspension,
payment problems, prizes and expiring points, undelivered parcels with a fee to pay, the
"419" inheritance story, and wallet "verification" or seed-phrase requests.  They are written
from that general knowledge, in the languages most common in European and American mail, and
each category counts once with a weight of 1-2, so wording alone never reaches the tag
threshold: it only adds up with evidence from the sender line or the links.

Every pattern is lower-case, bounded and linear-time (``tests/scan/test_regex_budget.py``
audits each one), and is only tried when the text holds one of its category's hints.  The
patterns allow any whitespace between words (a line break in "update your billing"), so the
hints are looked for in the text with its whitespace runs made single spaces: checked on the
text as it is, the hint "update your" skipped text the pattern matches.
``tests/scan/test_lures.py`` checks that every pattern is reachable through its hints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from popproxy.scan.verdict import Signal
from popproxy.scan.weights import weight


@dataclass(frozen=True, slots=True)
class Lure:
    """One lure category: its signal name, its hints and its patterns.

    Attributes:
        name: the signal raised ("lure-credentials").
        hints: lower-case fragments at least one of which every match of every pattern
            contains, words separated by one space.  Checking them with ``in`` (a memchr-speed
            scan) first skips the patterns on most text, which matters because Python's re
            tries every alternative at every position.
        patterns: lower-case patterns (English, then the other languages), tried on
            lower-cased text.
    """

    name: str
    hints: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...]

    def __post_init__(self) -> None:
        bad = [h for h in self.hints if h != " ".join(h.split()) or h != h.lower() or not h]
        if bad:
            raise ValueError(f"{self.name}: hints must be lower-case, single-spaced: {bad}")

    def hinted(self, spaced: str) -> bool:
        """Whether the text holds one of the hints (so a pattern may match).

        Args:
            spaced: the lower-cased text with each whitespace run made one space (see
                :func:`spaced`): a pattern's ``\\s+`` matches any run, a hint's space one.
        """
        return any(hint in spaced for hint in self.hints)

    def matches(self, lowered: str) -> bool:
        """Whether one of the patterns matches the lower-cased text."""
        return any(pattern.search(lowered) for pattern in self.patterns)


def spaced(lowered: str) -> str:
    """``lowered`` with each run of whitespace made one space, for :meth:`Lure.hinted`.

    ``str.split`` and the patterns' ``\\s`` agree on what whitespace is (Unicode's).
    """
    return " ".join(lowered.split())


def _lure(name: str, hints: tuple[str, ...], *sources: str) -> Lure:
    return Lure(name, hints, tuple(re.compile(s) for s in sources))


_ACCOUNT = r"(?:account|identity|e-?mail|mailbox|password|credentials|information|details|login)"

# Each category in English, and (``_INTL``) in the other languages most common in European and
# Latin American mail (Portuguese, Spanish, French, German, Dutch, Italian): phishing is
# localised, so an English-only list would miss most of it outside English-speaking countries.

_CREDENTIALS = (
    r"\b(?:verify|confirm|validate|update|reactivate|unlock|restore|re-?enter)\s+"
    r"(?:your|the)\s+" + _ACCOUNT + r"|\bpassword\s+(?:will\s+)?expir|"
    r"\bunusual\s+(?:sign[- ]?in|login|activity)|\bsuspicious\s+(?:sign[- ]?in|login)|"
    r"\bmailbox\s+(?:is\s+)?(?:full|quota)|\bstorage\s+(?:is\s+)?(?:full|quota)"
)

_CREDENTIALS_INTL = (
    r"\b(?:verifique|confirme|atualize|actualice|valide)\s+(?:seus|suas|sus|su|sua|seu)\s+"
    r"(?:dados|datos|conta|cuenta|cadastro|identidad|identidade|informa[çc][õo]es|"
    r"informaciones|senha|contrase[ñn]a)|"
    r"\b(?:bevestig|verifieer|controleer)\s+uw\s+(?:gegevens|verzendgegevens|account|"
    r"identiteit|rekening)|\b(?:verifica|conferma|aggiorna)\s+i\s+tuoi\s+dati|"
    r"\b(?:v[ée]rifiez|confirmez|mettez\s+[àa]\s+jour)\s+(?:votre|vos)\s+"
    r"(?:compte|identit[ée]|informations|donn[ée]es)|"
    r"\b(?:best[äa]tigen|verifizieren|aktualisieren)\s+sie\s+(?:ihr|ihre)\s+"
    r"(?:konto|daten|identit[äa]t|zugang)"
)

_URGENCY = (
    r"\baccounts?\s+(?:has\s+been\s+|have\s+been\s+|will\s+be\s+|is\s+|are\s+)?"
    r"(?:suspended|locked|disabled|deactivated|restricted|terminated|on\s+hold)|"
    r"\bwithin\s+(?:24|48|72)\s+hours\b|\bimmediate\s+action\b|\baction\s+required\b|"
    r"\bfailure\s+to\s+(?:verify|confirm|update)"
)

_URGENCY_INTL = (
    r"\b(?:conta|cuenta)\s+(?:foi\s+|ha\s+sido\s+|est[áa]\s+)?"
    r"(?:bloqueada|suspensa|suspendida|desativada|desactivada)|"
    r"\bcompte\s+(?:a\s+[ée]t[ée]\s+|est\s+)?(?:bloqu[ée]|suspendu|d[ée]sactiv[ée])|"
    r"\bkonto\s+(?:wurde\s+|wird\s+|ist\s+)?(?:gesperrt|eingeschr[äa]nkt|deaktiviert)|"
    r"\b(?:dentro\s+de|em\s+at[ée]|sous|innerhalb\s+von)\s+(?:24|48|72)\s+"
    r"(?:horas|heures|stunden)|"
    r"\b(?:a[çc][ãa]o|acci[óo]n)\s+(?:imediata|inmediata)|\b[úu]ltim[oa]\s+(?:aviso|chance|"
    r"oportunidad)|\baviso\s+final|\bprazo\s+final|\bletzte\s+(?:erinnerung|mahnung|"
    r"warnung)|\bdernier\s+(?:avis|rappel)|\blaatste\s+(?:kans|herinnering|waarschuwing)"
)

_PAYMENT = (
    r"\bpayment\s+(?:has\s+)?(?:failed|declined|was\s+declined|unsuccessful)|"
    r"\bunable\s+to\s+process\s+your\s+payment|"
    r"\bupdate\s+your\s+(?:billing|payment|card|credit\s+card)|"
    r"\b(?:claim|receive)\s+your\s+(?:reward|prize|refund|gift)"
)

_PRIZE = (
    r"\byou(?:'ve|\s+have)\s+(?:been\s+selected|won)\b|\bcongratulations\b|"
    r"\b(?:claim|redeem)\s+(?:your|now|it)\b|\bwinner\b|"
    r"\byou(?:'ve|\s+have)\s+been\s+chosen|\byou\s+are\s+(?:the|our|a)\s+lucky|"
    r"\blucky\s+(?:winner|customer|user|visitor)|\bmystery\s+box|\bfree\s+spins\b"
)

_PRIZE_INTL = (
    r"\bvoc[êe]\s+(?:ganhou|foi\s+selecionad[oa])|\bparab[ée]ns\b|"
    r"\b(?:has|ha)\s+(?:ganado|sido\s+seleccionad[oa])|"
    r"\bvous\s+avez\s+(?:gagn[ée]|[ée]t[ée]\s+s[ée]lectionn[ée])|\bf[ée]licitations\b|"
    r"\bherzlichen\s+gl[üu]ckwunsch|\bsie\s+haben\s+gewonnen|\bgewinner\b|"
    r"\bsie\s+wurden\s+(?:als\s+\w+\s+)?ausgew[äa]hlt|\bfoi\s+contemplad[oa]|"
    r"\bzu\s+den\s+(?:gl[üu]cklichen\s+)?(?:auserw[äa]hlten|gewinnern)|\bgefeliciteerd\b|"
    r"\b(?:u\s+bent|je\s+bent)\s+(?:geselecteerd|gekozen|uitgekozen)|"
    r"\bvous\s+avez\s+[ée]t[ée]\s+choisi|\bha\s+sido\s+elegid[oa]|"
    # Loyalty points "about to expire" that must be redeemed (a staple of bank phishing in
    # Brazil and Iberia): pontos/puntos ... expirar/vencer, resgate/canjee seus pontos.
    r"\b(?:pontos|puntos|points)\b[^.!?\n]{0,60}\b(?:expira\w*|venc\w*|caducan?\w*|expire?s?)\b|"
    r"\b(?:resgate|resgatar|canjea|canjee)\s+(?:seus|sus|os|los)?\s*(?:pontos|puntos|saldo)"
)

# Parcel-delivery lures: a failed delivery, a small fee to release a parcel.
_DELIVERY = (
    r"\b(?:package|parcel|shipment|delivery)\s+(?:could\s+not|couldn't|cannot|can't|"
    r"was\s+not|wasn't|has\s+not\s+been)\s+(?:be\s+)?(?:delivered|dispatched|shipped)|"
    r"\bre-?delivery\b|\bdelivery\s+attempt|\b(?:customs|shipping|delivery|redelivery)\s+"
    r"(?:fee|charge|costs?)\b|\b(?:package|parcel)\s+(?:is\s+)?(?:on\s+hold|held|"
    r"pending|waiting)|\bunpaid\s+(?:customs|shipping|postage)"
)

_DELIVERY_INTL = (
    r"\b(?:encomenda|pacote|paquete|env[íi]o)\s+(?:n[ãa]o\s+pôde\s+ser\s+entregue|"
    r"no\s+(?:pudo|ha\s+podido)\s+ser\s+entregad[oa]|retid[oa]|pendente|pendiente)|"
    r"\b(?:colis|paquet)\s+(?:n'a\s+pas\s+pu\s+[êe]tre\s+livr[ée]|en\s+attente|bloqu[ée])|"
    r"\bfrais\s+de\s+(?:livraison|douane)|\btaxa\s+de\s+(?:entrega|envio|importa[çc][ãa]o)|"
    r"\b(?:paket|sendung)\s+(?:konnte\s+nicht\s+zugestellt|wurde\s+nicht\s+zugestellt)|"
    r"\bzollgeb[üu]hr|"
    r"\b(?:encomenda|pedido|pacote)\s+(?:est[áa]\s+|foi\s+)?(?:retid[oa]|taxad[oa]|"
    r"bloquead[oa])|\btaxas?\s+alfandeg|"
    r"\bpakket\s+(?:in\s+afwachting|wacht|kon\s+niet|is\s+niet)|\bniet-?ge[ëe]iste?\s+pakket"
)

# Advance-fee ("419") fraud: the stock story of unclaimed millions needing a partner.
_ADVANCE_FEE = (
    # "US$18.5 million", "4.5 million United States dollars": news writes "$232 million".
    # A number is taken whole (``*+``) and starts where a run of digits, dots and commas
    # starts: retrying from every digit of "1.1.1.1..." was quadratic.
    r"\b(?:us\$|usd)\s?\d[\d.,]*+\s*(?:m\b|million)|"
    r"\b(?<![.,])\d[\d.,]*+\s*million\s+(?:us\s+|united\s+states\s+)(?:dollars|usd)|"
    r"\b(?:sum|total)\s+of\s+(?:us\$|usd|\$|\u20ac|\u00a3)?\s?\d[\d.,]*+\s*million|"
    r"\bnext\s+of\s+kin\b|\b(?:sole|legal|rightful)\s+beneficiary|"
    r"\bbusiness\s+(?:proposal|proposition|deal)\b|\bconsignment\s+box|\batm\s+card\b|"
    r"\b(?:inheritance|compensation|unclaimed|dormant)\s+(?:fund|funds|payment|account)|"
    r"\bmutual\s+benefit|\bstrictly\s+confidential|\b(?:barrister|attorney)\s+at\s+law|"
    r"\bi\s+need\s+your\s+(?:assistance|cooperation|urgent)|"
    # The dying-benefactor and widow stories (FBI and FTC advance-fee fraud warnings).
    r"\bmy\s+late\s+(?:husband|wife|father|client)|\b(?:terminal|critical)\s+"
    r"(?:cancer|illness)|\bi\s+am\s+childless|\bdonate\s+(?:the\s+)?(?:fund|funds|money)|"
    r"\bforeign\s+(?:partner|investor)"
)

_ADVANCE_FEE_INTL = (
    r"\b(?:transferir|administrar|investir)\s+(?:e\s+\w+\s+)?(?:meus|os\s+meus)\s+fundos|"
    r"\bherdei\b|\bheran[çc]a\s+de|\b(?:s[óo]cio|parceiro)\s*/?\s*investidor\s+estrangeiro|"
    r"\b(?:transferir|invertir)\s+(?:mis|los)\s+fondos|\bherencia\s+de|"
    r"\bsocio\s+extranjero|\btransf[ée]rer\s+(?:mes|les)\s+fonds|\bh[ée]ritage\s+de"
)

# Cryptocurrency lures: wallet "verification", seed phrases, free mints and airdrops.
_CRYPTO = (
    r"\b(?:seed|recovery|secret|mnemonic)\s+(?:phrase|words)\b|\bairdrop\b|"
    r"\bfree\s+mint|\b(?:verify|validate|synchroni[sz]e|connect)\s+your\s+wallet|"
    r"\bwallet\s+(?:has\s+been\s+|will\s+be\s+|is\s+)?(?:suspended|locked|restricted|"
    r"disabled|compromised)|\bunverified\s+wallets?|\b(?:claim|withdraw)\s+your\s+"
    r"(?:tokens|btc|bitcoin|usdt|eth|crypto)|\bmining\s+balance|"
    r"\bconnect\s+(?:and\s+verify\s+)?(?:with\s+)?(?:an?\s+)?(?:eligible\s+)?web3|"
    r"\bwallet\s+(?:has|have)\s+not\s+(?:yet\s+)?been\s+(?:verified|validated|synchroni[sz]ed)|"
    r"\b(?:update|upgrade|migrate)\s+your\s+wallet"
)


# The hints of each category: words (or word fragments) from its patterns.  A space in a hint
# stands for any run of whitespace, as ``\s+`` does in the patterns ("next of kin" is hinted in
# "next\nof kin"); "rifiez" stands for "vérifiez" and "verifiez".
LURES: tuple[Lure, ...] = (
    _lure(
        "lure-credentials",
        (
            "verif", "rifiez", "confirm", "validat", "updat", "reactivat", "unlock", "restor",
            "re-enter", "reenter", "password", "unusual", "suspicious", "mailbox", "storage",
            "atualiz", "actualic", "valide", "mettez", "bestätig", "bestatig", "aktualisier",
            "bevestig", "verifieer", "controleer", "verifica", "conferma", "aggiorna",
        ),
        _CREDENTIALS, _CREDENTIALS_INTL,
    ),
    _lure(
        "lure-urgency",
        (
            "account", "within", "immediate", "action", "failure", "conta", "cuenta", "compte",
            "konto", "horas", "heures", "stunden", "imediata", "inmediata", "ltim", "aviso",
            "prazo", "letzte", "dernier", "laatste",
        ),
        _URGENCY, _URGENCY_INTL,
    ),
    _lure(
        "lure-payment",
        ("payment", "process your", "update your", "claim your", "receive your"),
        _PAYMENT,
    ),
    _lure(
        "lure-prize",
        (
            "you've", "you have", "congratulation", "claim", "redeem", "winner", "voc", "parab",
            "ganado", "seleccionad", "vous avez", "félicitation", "felicitation", "glückwunsch",
            "gluckwunsch", "gewonnen", "chosen", "lucky", "mystery", "free spins", "ausgew",
            "contemplad", "auserw", "gefeliciteerd", "geselecteerd", "gekozen", "choisi",
            "elegid", "gewinner", "pontos", "puntos", "points", "resgat", "canje",
        ),
        _PRIZE, _PRIZE_INTL,
    ),
    _lure(
        "lure-delivery",
        (
            "package", "parcel", "shipment", "delivery", "customs", "shipping", "unpaid",
            "encomenda", "pacote", "paquete", "envío", "envio", "colis", "paquet", "frais",
            "taxa", "paket", "sendung", "zollgeb", "pedido", "pakket",
        ),
        _DELIVERY, _DELIVERY_INTL,
    ),
    _lure(
        "lure-advance-fee",
        (
            "us$", "usd", "million", "next of kin", "beneficiary", "business pro",
            "business deal", "consignment", "atm card", "inheritance", "compensation",
            "unclaimed", "dormant", "mutual", "confidential", "at law", "i need your", "my late",
            "cancer", "illness", "childless", "donate", "foreign", "fundos", "herd", "heran",
            "investidor", "fondos", "herencia", "extranjero", "fonds", "ritage",
        ),
        _ADVANCE_FEE, _ADVANCE_FEE_INTL,
    ),
    _lure(
        "lure-crypto",
        (
            "phrase", "words", "airdrop", "mint", "wallet", "tokens", "btc", "bitcoin", "usdt",
            "eth", "crypto", "mining", "web3",
        ),
        _CRYPTO,
    ),
)

# Lures sit near the top of a message or, behind filler text, at its end; a long newsletter's
# middle adds cost (every pattern is tried at every position), not evidence.
_LURE_HEAD_CHARS = 12_000
_LURE_TAIL_CHARS = 3_000


def lure_signals(text: str) -> list[Signal]:
    """One signal per lure category found in the visible text and subject."""
    if len(text) > _LURE_HEAD_CHARS + _LURE_TAIL_CHARS:
        text = text[:_LURE_HEAD_CHARS] + "\n" + text[-_LURE_TAIL_CHARS:]
    # Patterns are lower-case and matched against lower-cased text: re.IGNORECASE is several
    # times slower on long bodies.
    lowered = text.lower()
    hinted = spaced(lowered)
    return [
        Signal(name=lure.name, weight=weight(lure.name), detail="")
        for lure in LURES
        if lure.hinted(hinted) and lure.matches(lowered)
    ]
