"""The weight table: every rule on the documented scale, looked up by name."""

from __future__ import annotations

import re

import pytest

from popproxy.scan.scoring import forces_tag
from popproxy.scan.settings import Thresholds
from popproxy.scan.weights import WEIGHTS, weight


def test_weights_are_on_the_scale() -> None:
    for name, value in WEIGHTS.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", name), name
        assert 0.0 <= value <= Thresholds().quarantine, name


def test_a_limit_weighs_at_least_a_tag() -> None:
    # The scoring forces tag for them anyway; the weight says the same in the score.
    for name, value in WEIGHTS.items():
        if forces_tag(name) and name.startswith("limit-"):
            assert value >= Thresholds().tag, name


def test_weight_looks_up_and_refuses_unknown_names() -> None:
    assert weight("link-feed-host") == WEIGHTS["link-feed-host"] == 7.0
    with pytest.raises(KeyError):
        weight("not-a-rule")
