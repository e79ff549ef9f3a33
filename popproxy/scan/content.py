"""Signals from the sender line and the wording: brand impersonation and lure phrases.

The phrase lists are the stock wording of phishing and scams as described in public guidance
(CISA, NCSC, APWG reports, FTC/FBI advance-fee fraud warnings, postal services' and crypto
wallets' own scam notices): requests to verify or re-enter credentials, threats of suspension,
payment problems, prizes and expiring points, undelivered parcels with a fee to pay, the
"419" inheritance story, and wallet "verification" or seed-phrase requests.  They are written
from that general knowledge, in the languages most common in European and American mail, and
each category counts once with a weight of 1-2, so wording alone never reaches the tag
threshold: it only adds up with evidence from the sender line or the links.
"""

from __future__ import annotations

import re
from functools import lru_cache

from popproxy.scan.addresses import mailboxes
from popproxy.scan.lookalike import latin_reading, names_brand
from popproxy.scan.obfuscation import MIN_BODY_HITS, obfuscation_kinds
from popproxy.scan.settings import ProtectedBrand
from popproxy.scan.verdict import Signal, clean_detail, clean_evidence
from popproxy.scan.weights import weight

_ACCOUNT = r"(?:account|identity|e-?mail|mailbox|password|credentials|information|details|login)"
# The same three lures in the other languages most common in European and Latin American mail
# (Portuguese, Spanish, French, German): phishing is localised, so an English-only list would
# miss most of it outside English-speaking countries.
_LURES_INTL: dict[str, str] = {
    "lure-advance-fee": (
        r"\b(?:transferir|administrar|investir)\s+(?:e\s+\w+\s+)?(?:meus|os\s+meus)\s+fundos|"
        r"\bherdei\b|\bheran[çc]a\s+de|\b(?:s[óo]cio|parceiro)\s*/?\s*investidor\s+estrangeiro|"
        r"\b(?:transferir|invertir)\s+(?:mis|los)\s+fondos|\bherencia\s+de|"
        r"\bsocio\s+extranjero|\btransf[ée]rer\s+(?:mes|les)\s+fonds|\bh[ée]ritage\s+de"
    ),
    "lure-credentials": (
        r"\b(?:verifique|confirme|atualize|actualice|valide)\s+(?:seus|suas|sus|su|sua|seu)\s+"
        r"(?:dados|datos|conta|cuenta|cadastro|identidad|identidade|informa[çc][õo]es|"
        r"informaciones|senha|contrase[ñn]a)|"
        r"\b(?:bevestig|verifieer|controleer)\s+uw\s+(?:gegevens|verzendgegevens|account|"
        r"identiteit|rekening)|\b(?:verifica|conferma|aggiorna)\s+i\s+tuoi\s+dati|"
        r"\b(?:v[ée]rifiez|confirmez|mettez\s+[àa]\s+jour)\s+(?:votre|vos)\s+"
        r"(?:compte|identit[ée]|informations|donn[ée]es)|"
        r"\b(?:best[äa]tigen|verifizieren|aktualisieren)\s+sie\s+(?:ihr|ihre)\s+"
        r"(?:konto|daten|identit[äa]t|zugang)"
    ),
    "lure-urgency": (
        r"\b(?:conta|cuenta)\s+(?:foi\s+|ha\s+sido\s+|est[áa]\s+)?"
        r"(?:bloqueada|suspensa|suspendida|desativada|desactivada)|"
        r"\bcompte\s+(?:a\s+[ée]t[ée]\s+|est\s+)?(?:bloqu[ée]|suspendu|d[ée]sactiv[ée])|"
        r"\bkonto\s+(?:wurde\s+|wird\s+|ist\s+)?(?:gesperrt|eingeschr[äa]nkt|deaktiviert)|"
        r"\b(?:dentro\s+de|em\s+at[ée]|sous|innerhalb\s+von)\s+(?:24|48|72)\s+"
        r"(?:horas|heures|stunden)|"
        r"\b(?:a[çc][ãa]o|acci[óo]n)\s+(?:imediata|inmediata)|\b[úu]ltim[oa]\s+(?:aviso|chance|"
        r"oportunidad)|\baviso\s+final|\bprazo\s+final|\bletzte\s+(?:erinnerung|mahnung|"
        r"warnung)|\bdernier\s+(?:avis|rappel)|\blaatste\s+(?:kans|herinnering|waarschuwing)"
    ),
    "lure-prize": (
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
    ),
    "lure-delivery": (
        r"\b(?:encomenda|pacote|paquete|env[íi]o)\s+(?:n[ãa]o\s+pôde\s+ser\s+entregue|"
        r"no\s+(?:pudo|ha\s+podido)\s+ser\s+entregad[oa]|retid[oa]|pendente|pendiente)|"
        r"\b(?:colis|paquet)\s+(?:n'a\s+pas\s+pu\s+[êe]tre\s+livr[ée]|en\s+attente|bloqu[ée])|"
        r"\bfrais\s+de\s+(?:livraison|douane)|\btaxa\s+de\s+(?:entrega|envio|importa[çc][ãa]o)|"
        r"\b(?:paket|sendung)\s+(?:konnte\s+nicht\s+zugestellt|wurde\s+nicht\s+zugestellt)|"
        r"\bzollgeb[üu]hr|"
        r"\b(?:encomenda|pedido|pacote)\s+(?:est[áa]\s+|foi\s+)?(?:retid[oa]|taxad[oa]|"
        r"bloquead[oa])|\btaxas?\s+alfandeg|"
        r"\bpakket\s+(?:in\s+afwachting|wacht|kon\s+niet|is\s+niet)|\bniet-?ge[ëe]iste?\s+pakket"
    ),
}
_LURES: dict[str, re.Pattern[str]] = {
    "lure-credentials": re.compile(
        r"\b(?:verify|confirm|validate|update|reactivate|unlock|restore|re-?enter)\s+"
        r"(?:your|the)\s+" + _ACCOUNT + r"|\bpassword\s+(?:will\s+)?expir|"
        r"\bunusual\s+(?:sign[- ]?in|login|activity)|\bsuspicious\s+(?:sign[- ]?in|login)|"
        r"\bmailbox\s+(?:is\s+)?(?:full|quota)|\bstorage\s+(?:is\s+)?(?:full|quota)"
    ),
    "lure-urgency": re.compile(
        r"\baccounts?\s+(?:has\s+been\s+|have\s+been\s+|will\s+be\s+|is\s+|are\s+)?"
        r"(?:suspended|locked|disabled|deactivated|restricted|terminated|on\s+hold)|"
        r"\bwithin\s+(?:24|48|72)\s+hours\b|\bimmediate\s+action\b|\baction\s+required\b|"
        r"\bfailure\s+to\s+(?:verify|confirm|update)"
    ),
    "lure-payment": re.compile(
        r"\bpayment\s+(?:has\s+)?(?:failed|declined|was\s+declined|unsuccessful)|"
        r"\bunable\s+to\s+process\s+your\s+payment|"
        r"\bupdate\s+your\s+(?:billing|payment|card|credit\s+card)|"
        r"\b(?:claim|receive)\s+your\s+(?:reward|prize|refund|gift)"
    ),
    "lure-prize": re.compile(
        r"\byou(?:'ve|\s+have)\s+(?:been\s+selected|won)\b|\bcongratulations\b|"
        r"\b(?:claim|redeem)\s+(?:your|now|it)\b|\bwinner\b|"
        r"\byou(?:'ve|\s+have)\s+been\s+chosen|\byou\s+are\s+(?:the|our|a)\s+lucky|"
        r"\blucky\s+(?:winner|customer|user|visitor)|\bmystery\s+box|\bfree\s+spins\b"
    ),
    # Parcel-delivery lures: a failed delivery, a small fee to release a parcel.
    "lure-delivery": re.compile(
        r"\b(?:package|parcel|shipment|delivery)\s+(?:could\s+not|couldn't|cannot|can't|"
        r"was\s+not|wasn't|has\s+not\s+been)\s+(?:be\s+)?(?:delivered|dispatched|shipped)|"
        r"\bre-?delivery\b|\bdelivery\s+attempt|\b(?:customs|shipping|delivery|redelivery)\s+"
        r"(?:fee|charge|costs?)\b|\b(?:package|parcel)\s+(?:is\s+)?(?:on\s+hold|held|"
        r"pending|waiting)|\bunpaid\s+(?:customs|shipping|postage)"
    ),
    # Advance-fee ("419") fraud: the stock story of unclaimed millions needing a partner.
    "lure-advance-fee": re.compile(
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
    ),
    # Cryptocurrency lures: wallet "verification", seed phrases, free mints and airdrops.
    "lure-crypto": re.compile(
        r"\b(?:seed|recovery|secret|mnemonic)\s+(?:phrase|words)\b|\bairdrop\b|"
        r"\bfree\s+mint|\b(?:verify|validate|synchroni[sz]e|connect)\s+your\s+wallet|"
        r"\bwallet\s+(?:has\s+been\s+|will\s+be\s+|is\s+)?(?:suspended|locked|restricted|"
        r"disabled|compromised)|\bunverified\s+wallets?|\b(?:claim|withdraw)\s+your\s+"
        r"(?:tokens|btc|bitcoin|usdt|eth|crypto)|\bmining\s+balance|"
        r"\bconnect\s+(?:and\s+verify\s+)?(?:with\s+)?(?:an?\s+)?(?:eligible\s+)?web3|"
        r"\bwallet\s+(?:has|have)\s+not\s+(?:yet\s+)?been\s+(?:verified|validated|synchroni[sz]ed)|"
        r"\b(?:update|upgrade|migrate)\s+your\s+wallet"
    ),
}


def _sig(name: str, detail: str, evidence: str = "") -> Signal:
    return Signal(
        name=name, weight=weight(name), detail=clean_detail(detail),
        evidence=clean_evidence(evidence),
    )


_LURES_INTL_RE = {name: re.compile(rx) for name, rx in _LURES_INTL.items()}

# Words at least one of which every alternative of a category contains.  Checking them with
# ``in`` (a memchr-speed scan) first skips the regexes on most bodies, which matters because
# Python's re tries every alternative at every position.
_HINTS: dict[str, tuple[str, ...]] = {
    "lure-credentials": (
        "verif", "confirm", "validat", "updat", "reactivat", "unlock", "restor", "re-enter",
        "reenter",
        "password", "unusual", "suspicious", "mailbox", "storage", "atualiz", "actualic",
        "valide", "mettez", "bestätig", "bestatig", "aktualisier", "bevestig", "verifieer",
        "controleer", "verifica", "conferma", "aggiorna",
    ),
    "lure-urgency": (
        "account", "within", "immediate", "action", "failure", "conta", "cuenta", "compte",
        "konto", "horas", "heures", "stunden", "imediata", "inmediata", "ltim", "aviso",
        "prazo", "letzte", "dernier", "laatste",
    ),
    "lure-payment": ("payment", "process your", "update your", "claim your", "receive your"),
    "lure-prize": (
        "you've", "you have", "congratulation", "claim", "redeem", "winner", "voc", "parab",
        "ganado", "seleccionad", "vous avez", "félicitation", "felicitation", "glückwunsch",
        "gluckwunsch", "gewonnen", "chosen", "lucky", "mystery", "free spins", "ausgew",
        "contemplad", "auserw", "gefeliciteerd", "geselecteerd", "gekozen", "choisi", "elegid",
        "gewinner", "pontos", "puntos", "points", "resgat", "canje",
    ),
    "lure-delivery": (
        "package", "parcel", "shipment", "delivery", "customs", "shipping", "unpaid",
        "encomenda", "pacote", "paquete", "envío", "envio", "colis", "paquet", "frais", "taxa",
        "paket", "sendung", "zollgeb", "pedido", "pakket",
    ),
    "lure-advance-fee": (
        "us$", "usd", "million", "next of kin", "beneficiary", "business pro", "business deal",
        "consignment", "atm card", "inheritance", "compensation", "unclaimed", "dormant",
        "mutual", "confidential", "at law", "i need your", "my late", "cancer", "illness",
        "childless", "donate",
        "foreign", "fundos", "herd", "heran", "investidor", "fondos", "herencia", "extranjero",
        "fonds", "ritage",
    ),
    "lure-crypto": (
        "phrase", "words", "airdrop", "mint", "wallet", "tokens", "btc", "bitcoin", "usdt",
        "eth", "crypto", "mining", "web3",
    ),
}


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
    found = []
    for name, pattern in _LURES.items():
        if not any(hint in lowered for hint in _HINTS[name]):
            continue
        intl = _LURES_INTL_RE.get(name)
        if pattern.search(lowered) or (intl is not None and intl.search(lowered)):
            found.append(name)
    return [_sig(name, "") for name in found]


# A greeting addressed to a bare e-mail address ("Dear jo@example.org,"): bulk phishing knows
# only the address it was sent to, while people and real services greet by name.
_GREETING = (
    r"\b(?:dear|hello|hi|hey|greetings|attention|attn|oi|ol[áa]|hola|estimad[oa]|prezad[oa]|"
    r"car[oa]|bonjour|cher|ch[èe]re|hallo|guten\s+tag|liebe[r]?|sehr\s+geehrte[r]?)\b[\s,:(]{1,4}"
)
_GREETING_ADDRESS = re.compile(_GREETING + r"[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,24}\b")
_GREETING_HINT = re.compile(r"@[a-z0-9-]+\.")
# The greeting sits at the top: only the first characters of the text are searched.
_GREETING_WINDOW = 3000
# Recipient addresses whose greeting pattern is kept: a proxy serves a few mailboxes.
_GREETING_CACHE = 64


def greeting_signals(visible: str, to_header: str = "") -> list[Signal]:
    """greeting-address: the text greets the reader by a bare e-mail address.

    Any address with a domain counts, and so does the recipient's own address as written in
    To (whatever its form), since that is the one thing a bulk sender knows about the reader.
    """
    head = visible[:_GREETING_WINDOW].lower()
    if "@" not in head:
        return []
    if _GREETING_HINT.search(head) and _GREETING_ADDRESS.search(head):
        return [_sig("greeting-address", "")]
    boxes = [a.lower() for _, a in mailboxes(to_header) if "@" in a]
    if len(boxes) == 1 and boxes[0] in head and _own_greeting(boxes[0]).search(head):
        return [_sig("greeting-address", "recipient")]
    return []


@lru_cache(maxsize=_GREETING_CACHE)
def _own_greeting(address: str) -> re.Pattern[str]:
    """A greeting to exactly ``address`` (not to a longer address that starts with it)."""
    return re.compile(_GREETING + re.escape(address) + r"(?![\w.-]*\w)")


# Mixed-script words the From and Subject need: one is a keyboard-layout slip (a Cyrillic
# "\u0421" typed for "C" on the same key: "\u0421reate fpga image" from a Russian speaker), while
# homoglyph lures swap letters in several words or several letters of one - or spell a brand's
# name with one ("Meta\u041cask"), which counts alone.
_MIN_HEADLINE_MIXED = 2
_MIXED = "mixed-script-words"
_WORD = re.compile(r"[^\W\d_]+")


def obfuscation_signals(
    visible: str, headline: str, brands: tuple[ProtectedBrand, ...] = ()
) -> list[Signal]:
    """text-obfuscated: homoglyph words, invisible or overlay characters in text or headers.

    Args:
        visible: the visible text.
        headline: From and Subject.
        brands: brands whose names spelt with one foreign letter count as one obfuscation.
    """
    kinds = obfuscation_kinds(visible, MIN_BODY_HITS)
    in_headline = obfuscation_kinds(headline, 1)
    if (
        _MIXED in in_headline
        and _MIXED not in obfuscation_kinds(headline, _MIN_HEADLINE_MIXED)
        and not _brand_homoglyph(headline, brands)
    ):
        in_headline.remove(_MIXED)
    kinds += [k for k in in_headline if k not in kinds]
    return [_sig("text-obfuscated", ",".join(kinds))] if kinds else []


def _brand_homoglyph(text: str, brands: tuple[ProtectedBrand, ...]) -> bool:
    """True when a mixed-script word of ``text`` reads as a brand's name ("Meta\u041cask")."""
    return any(
        not word.isascii()
        and obfuscation_kinds(word, 1)
        and names_brand(latin_reading(word), brands) is not None
        for word in _WORD.findall(text)
    )
