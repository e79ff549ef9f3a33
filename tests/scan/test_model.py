"""The trained combiner: the shipped model file, its evaluation, and the fallback to the weights."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from popproxy.scan import Scanner, ScanSettings
from popproxy.scan.features import FEATURES_VERSION, SIGNAL_PREFIX
from popproxy.scan.model import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    PACKAGED_MODEL,
    Model,
    ModelError,
    load_for,
    load_model,
    untrained_weight,
)
from tests.scan.helpers import REPO, build, names

# Substrings that would mean a feature tells the corpora apart rather than phishing from ham.
FORBIDDEN_FEATURE_WORDS = (
    "date", "mailer", "received", "x-", "lang", "user-agent", "message-id", "to:", "tld:",
    "host:", "domain:",
)


def _shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PACKAGED_MODEL.read_text())
    return data


def _train_script() -> ModuleType:
    """bench/train_scanner.py, for its messages written for this test (no training library)."""
    path = REPO / "bench" / "train_scanner.py"
    spec = importlib.util.spec_from_file_location("train_scanner", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("train_scanner")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["train_scanner"] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
    return module


def _model_scanner(path: Path | None = None) -> Scanner:
    return Scanner(ScanSettings(combiner="model", model_path=path), feeds=())


def test_shipped_model_loads_and_is_versioned() -> None:
    data = _shipped()
    assert data["format"] == MODEL_FORMAT
    assert data["format_version"] == MODEL_FORMAT_VERSION
    assert data["features_version"] == FEATURES_VERSION
    assert len(str(data["model_version"])) >= 8
    model = load_model(PACKAGED_MODEL)
    assert model.version == data["model_version"]
    assert _model_scanner().model == model


def test_shipped_model_names_no_forbidden_feature() -> None:
    for name in _shipped()["coefficients"]:
        lowered = name.lower()
        assert not any(word in lowered for word in FORBIDDEN_FEATURE_WORDS), name


def test_signal_coefficients_are_never_negative() -> None:
    """Evidence never makes a message look cleaner (bench/train_scanner.py's bounds)."""
    coefficients = _shipped()["coefficients"]
    signals = {n: c for n, c in coefficients.items() if n.startswith(SIGNAL_PREFIX)}
    assert signals
    assert all(c >= 0 for c in signals.values())


def test_padding_lowers_a_score_by_at_most_the_budget() -> None:
    data = _shipped()
    budget = data["training"]["negative_budget"]
    worst = sum(min(0.0, c) * data["clip"][n] for n, c in data["coefficients"].items())
    assert worst >= -budget - 1e-6


def test_probability_is_monotone_in_a_strong_signal() -> None:
    model = load_model(PACKAGED_MODEL)
    strongest = max(
        (n for n in model.coefficients if n.startswith(SIGNAL_PREFIX)),
        key=lambda n: model.coefficients[n],
    )
    base = {"links.count": 1.0, "text.chars": 0.5}
    without = model.raw_score(base)
    with_signal = model.raw_score({**base, strongest: 1.0})
    assert with_signal > without
    assert model.probability(with_signal) > model.probability(without)


def test_model_reproduces_the_training_scripts_scores() -> None:
    """The JSON export (standardisation folded in, offsets, clip) equals the fitted model."""
    script = _train_script()
    checks = _shipped()["checks"]
    assert set(checks) == set(script.CHECK_MESSAGES)
    scanner = _model_scanner()
    assert scanner.model is not None
    for name, spec in script.CHECK_MESSAGES.items():
        verdict, vector = scanner.scan_features(script.check_message(spec))
        unclipped = scanner.model.raw_score(vector) + untrained_weight(
            verdict.signals, scanner.model
        )
        assert unclipped == pytest.approx(checks[name], abs=1e-3), name
        table = Scanner(ScanSettings(combiner="weights"), feeds=()).scan(
            script.check_message(spec)
        )
        assert verdict.score == pytest.approx(max(0.0, round(unclipped, 2), table.score))


def test_credential_lure_is_flagged_and_personal_mail_passes() -> None:
    script = _train_script()
    scanner = _model_scanner()
    lure = scanner.scan(script.check_message(script.CHECK_MESSAGES["credential-lure"]))
    personal = scanner.scan(script.check_message(script.CHECK_MESSAGES["personal"]))
    assert lure.action != "pass"
    assert personal.action == "pass"


def test_missing_model_falls_back_to_the_weights(tmp_path: Path) -> None:
    message = build(text="verify your account within 24 hours", subject="account suspended")
    fallback = _model_scanner(tmp_path / "absent.json")
    assert fallback.model is None
    weights = Scanner(ScanSettings(combiner="weights"), feeds=())
    assert fallback.scan(message) == weights.scan(message)


@pytest.mark.parametrize(
    "document",
    [
        {"format": "something else"},
        {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION + 1},
        {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
         "features_version": FEATURES_VERSION + 1},
        {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
         "features_version": FEATURES_VERSION, "model_version": "x", "intercept": "nan",
         "coefficients": {}, "operating_point": {"score": 4, "logit": 0}},
        {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
         "features_version": FEATURES_VERSION},
    ],
    ids=["foreign", "format-version", "features-version", "not-finite", "truncated"],
)
def test_incompatible_model_is_refused_and_weights_used(
    tmp_path: Path, document: dict[str, object]
) -> None:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ModelError):
        load_model(path)
    assert load_for(path) is None
    assert _model_scanner(path).model is None


def test_forced_tag_signal_still_tags_in_model_mode() -> None:
    message = build(text="hello", headers=(("X-Popproxy-Verdict", "pass; score=0"),))
    verdict = _model_scanner().scan(message)
    assert "spoofed-verdict-header" in names(verdict)
    assert verdict.action == "tag"


def test_unparsed_structure_is_defanged_at_least_in_model_mode() -> None:
    """limit-structure (a MIME structure read as raw text) forces defang whichever combiner."""
    message = build(text="hello")
    head, body = message.split(b"\r\n\r\n", 1)
    padded = head + b"\r\n\r\n" + b"--x\r\n" * 20_001 + body
    verdict = _model_scanner().scan(padded)
    assert "limit-structure" in names(verdict)
    assert verdict.action in ("defang", "quarantine")


def test_the_table_is_a_floor_for_the_model() -> None:
    """A classic lure the corpus underweights (an IP-host sign-in link) still tags."""
    message = build(
        html='<a href="http://198.51.100.7/login">Sign in to PayPal</a>',
        sender="Security <alert@example.test>",
        subject="Verify now",
    )
    table = Scanner(ScanSettings(combiner="weights"), feeds=()).scan(message)
    model = _model_scanner().scan(message)
    assert table.action == "tag"
    assert model.score >= table.score
    assert model.action != "pass"


def test_untrained_signal_counts_with_its_table_weight() -> None:
    model = Model(version="t", intercept=0.0, coefficients={}, clip={}, operating_score=4.0,
                  operating_logit=0.0)
    from popproxy.scan.verdict import Signal

    signals = [Signal(name="link-feed-host", weight=7.0), Signal(name="link-feed-domain",
                                                                  weight=4.0)]
    assert untrained_weight(signals, model) == 7.0  # one group: strongest counts


def _features(message: bytes) -> dict[str, float]:
    return Scanner(ScanSettings(combiner="weights"), feeds=()).scan_features(message)[1]


def test_features_ignore_dates_mailers_received_and_x_headers() -> None:
    """Headers that tell the corpora's eras apart change no feature."""
    html = '<p>Your parcel is waiting.</p><a href="https://track.example.org/p?id=7">Track</a>'
    plain = build(html=html, subject="parcel notice")
    dressed = build(
        html=html,
        subject="parcel notice",
        headers=(
            ("Date", "Mon, 02 Sep 2002 10:00:00 +0000"),
            ("X-Mailer", "Microsoft Outlook Express 6.00.2600.0000"),
            ("Received", "from mx.example.org by mail.example.net; Mon, 2 Sep 2002"),
            ("X-Spam-Status", "No, hits=0.1"),
            ("Content-Language", "pt-BR"),
        ),
    )
    assert _features(dressed) == _features(plain)


def test_feature_names_never_carry_a_host_or_forbidden_word() -> None:
    message = build(
        html='<a href="http://login-verify.unique-campaign-host.top/wp-admin/x.php?e=a@b.c">'
        "Sign in</a>",
        sender="Support <help@another-unique-sender.xyz>",
        attachments=(("invoice.pdf", b"%PDF-1.4\n", "application/pdf"),),
    )
    vector = _features(message)
    assert vector["host.abused_tld_share"] == 1.0  # the host was seen, as a class
    assert vector["attach.pdf"] == 1.0
    for name in vector:
        assert "unique" not in name and "another" not in name, name
        assert not any(word in name.lower() for word in FORBIDDEN_FEATURE_WORDS), name


def test_lure_wording_counts_the_same_in_another_language() -> None:
    """The language is not a feature: Portuguese and English lures give the same shape."""
    english = build(text="Please verify your account now.", subject="Account notice")
    portuguese = build(text="Por favor, verifique sua conta agora.", subject="Aviso da conta")
    shape_en = {k: v for k, v in _features(english).items() if not k.startswith(SIGNAL_PREFIX)}
    shape_pt = {k: v for k, v in _features(portuguese).items() if not k.startswith(SIGNAL_PREFIX)}
    assert set(shape_en) == set(shape_pt)


def test_a_retrained_model_changes_the_verdict_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cached verdicts of one model are not served once another model judges."""
    from tests.proxy.test_scanning import _generation

    shipped = _generation(tmp_path)
    assert _generation(tmp_path, combiner="weights") != shipped
    retrained = dict(_shipped(), model_version="retrained00001")
    path = tmp_path / "model.json"
    path.write_text(json.dumps(retrained))
    monkeypatch.setattr("popproxy.scan.model.PACKAGED_MODEL", path)
    load_for.cache_clear()
    try:
        assert _generation(tmp_path) != shipped
    finally:
        load_for.cache_clear()
