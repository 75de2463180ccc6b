"""Toy-HAND descriptions follow the toy factors; the toy claim's probe and paired bootstrap
behave as documented."""
from __future__ import annotations

import numpy as np
import pandas as pd

from mtpg_aiaa.experiments.aesnet.toy_claim import paired_bootstrap, ridge_probe
from mtpg_aiaa.experiments.aesnet.toy_hand import TOY_ATTRIBUTES, describe_factors


def factors(**overrides):
    row = {"harmony": 0.95, "balance": 0.1, "heavy_side": "left", "sharpness": 0.05, "grain": 0.9,
           "scheme": "analogous", "subject": "portrait", "base_hue": 0.5}  # fmt: skip
    return pd.Series({**row, **overrides})


def test_descriptions_follow_the_factors_and_content_ignores_the_score():
    text = describe_factors(factors(), np.random.default_rng(0))
    assert set(text) == set(TOY_ATTRIBUTES)
    assert "excellent" in text["color"] and "very poor" in text["composition"] and "left" in text["composition"]
    assert "very poor" in text["depth_of_field"] and "very poor" in text["technical_quality"]
    better = describe_factors(factors(harmony=0.0, balance=0.99, sharpness=0.99, grain=0.0), np.random.default_rng(0))
    assert better["content"] == text["content"]  # the same painting content, whatever the quality
    assert "portrait" in text["content"] and "cool" in text["content"]


def test_ridge_probe_recovers_a_linear_score_and_bootstrap_sees_the_gap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=300)
    pred, _ = ridge_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:])
    assert np.corrcoef(pred, y[250:])[0, 1] > 0.95
    noise = [rng.normal(size=50) for _ in range(3)]
    result = paired_bootstrap([pred] * 3, noise, y[250:], n=200)
    assert result["diff"] > 0.5 and result["ci_low"] > 0 and result["p_le_0"] == 0
    same = paired_bootstrap([pred] * 3, [pred] * 3, y[250:], n=50)
    assert same["diff"] == 0 and same["ci_low"] == same["ci_high"] == 0
