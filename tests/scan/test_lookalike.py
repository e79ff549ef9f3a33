"""Look-alike hosts of protected brands: homoglyph skeletons, typos, brand words in hosts,
mixed scripts; and brand names in running text.  The link signals they raise are tested
through the scanner in test_link_rules.py."""

from __future__ import annotations

import pytest

from popproxy.scan.lookalike import (
    BrandMatch,
    brand_match,
    is_official,
    latin_reading,
    mixed_script,
    names_brand,
    skeleton,
)
from popproxy.scan.settings import DEFAULT_PROTECTED_BRANDS, ProtectedBrand

BRANDS = DEFAULT_PROTECTED_BRANDS
PAYPAL = next(b for b in BRANDS if b.name == "paypal")


def test_skeleton_maps_homoglyphs_and_ascii_tricks() -> None:
    assert skeleton("\u0440\u0430yp\u0430l") == "paypal"  # Cyrillic r, a
    assert skeleton("paypa1") == "paypal"
    assert skeleton("rnicrosoft") == "microsoft"
    assert latin_reading("Meta\u041cask") == "metamask"


@pytest.mark.parametrize(("label", "mixed"), [
    ("paypal", False),
    ("p\u0430ypal", True),  # Latin with a Cyrillic a
    ("\u043f\u0440\u0438\u0432\u0435\u0442", False),  # all Cyrillic
    ("\u65e5\u672c\u3054", False),  # Han with Hiragana: an allowed set
])
def test_mixed_script(label: str, mixed: bool) -> None:
    assert mixed_script(label) is mixed


def test_official_hosts_of_a_brand() -> None:
    assert is_official("www.paypal.co.uk", PAYPAL)
    assert is_official("www.paypalobjects.com", PAYPAL)
    assert not is_official("paypal.com.verify.example", PAYPAL)


@pytest.mark.parametrize(("host", "display", "match"), [
    ("xn--pypal-4ve.example", "p\u0430ypal.example", BrandMatch("paypal", "lookalike")),
    ("paypa1.example", "paypa1.example", BrandMatch("paypal", "lookalike")),
    ("amazom.example", "amazom.example", BrandMatch("amazon", "lookalike")),
    ("paypal.com.verify.example", "paypal.com.verify.example", BrandMatch("paypal", "in-host")),
    ("secure1paypal.example", "secure1paypal.example", BrandMatch("paypal", "in-host")),
    ("www.paypal.com", "www.paypal.com", None),
    ("pineapple.example", "pineapple.example", None),
    ("finance.example", "finance.example", None),  # one edit from binance, but a word
])
def test_brand_match(host: str, display: str, match: BrandMatch | None) -> None:
    assert brand_match(host, display, BRANDS) == match


def test_names_brand_takes_the_first_brand_in_list_order() -> None:
    assert names_brand("Your Apple ID and PayPal account", BRANDS) == PAYPAL
    assert names_brand("Sign in to OneDrive", BRANDS) is not None
    assert names_brand("pineapple juice", BRANDS) is None
    assert names_brand("paypal", ()) is None
    assert names_brand("acme sale", (ProtectedBrand("acme"),)) == ProtectedBrand("acme")
