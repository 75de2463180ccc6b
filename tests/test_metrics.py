"""Metrics match scipy/sklearn, follow the official threshold semantics, and plot cleanly."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from helpers import SHARED
from mtpg_aiaa.eval.metrics import (
    ConstantInputWarning,
    balanced_accuracy,
    binary_accuracy,
    compute_metrics,
    format_metrics_table,
    majority_accuracy,
    mae,
    plcc,
    srcc,
)
from mtpg_aiaa.eval.plots import save_scatter_plot

BAID_TEST_CSV = SHARED / "data" / "baid" / "test_set.csv"


def _correlated(n: int, seed: int = 0, ties: bool = False):
    """Targets on 0-1 and noisy predictions; ``ties`` rounds both to force many ties."""
    rng = np.random.default_rng(seed)
    target = rng.beta(4, 5, size=n)
    pred = 0.6 * target + 0.2 + 0.1 * rng.standard_normal(n)
    if ties:
        target, pred = np.round(target, 1), np.round(pred, 1)
    return pred, target


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scipy_and_sklearn(seed, ties):
    pred, target = _correlated(500, seed, ties)
    t_bin, p_bin = target > 0.5, pred > 0.5
    assert srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target)[0], abs=1e-12)
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target)[0], abs=1e-12)
    assert binary_accuracy(pred, target, 0.5) == pytest.approx(skm.accuracy_score(t_bin, p_bin), abs=1e-12)
    assert balanced_accuracy(pred, target, 0.5) == pytest.approx(
        skm.balanced_accuracy_score(t_bin, p_bin), abs=1e-12
    )
    assert mae(pred, target) == pytest.approx(skm.mean_absolute_error(target, pred), abs=1e-12)


def test_metrics_module_needs_only_numpy_and_scipy():
    # Static check (importing in a subprocess would also pay for the package's torch imports).
    import ast

    import mtpg_aiaa.eval.metrics as module

    tree = ast.parse(Path(module.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= {"__future__", "math", "warnings", "numpy", "scipy"}, roots


def test_threshold_is_strict():
    # Exactly-at-threshold counts as "not above" on both sides, as the official code.
    target = np.array([0.5, 0.5, 0.7, 0.2])
    pred = np.array([0.5, 0.51, 0.5, 0.2])
    assert binary_accuracy(pred, target, 0.5) == pytest.approx(0.5)
    assert majority_accuracy(np.array([5.0, 5.0, 5.1]), 5) == pytest.approx(2 / 3)
    # Same numbers on the 0-10 scale with threshold 5.
    assert binary_accuracy(pred * 10, target * 10, 5) == pytest.approx(0.5)


def test_balanced_accuracy_single_class_is_that_class_recall():
    target = np.array([0.1, 0.2, 0.3, 0.4])
    pred = np.array([0.1, 0.9, 0.3, 0.4])
    assert balanced_accuracy(pred, target, 0.5) == pytest.approx(0.75)


def test_majority_floor_on_baid_test():
    if not BAID_TEST_CSV.is_file():
        pytest.skip(f"BAID test labels not found at {BAID_TEST_CSV}")
    with BAID_TEST_CSV.open(newline="") as fh:
        scores = np.array([float(row["score"]) for row in csv.DictReader(fh)])
    assert scores.size == 6400
    assert round(majority_accuracy(scores, 5), 3) == 0.762
    # The floor does not depend on the scale as long as the threshold follows it.
    assert majority_accuracy(scores / 10, 0.5) == majority_accuracy(scores, 5)


def test_compute_metrics_keys_and_bootstrap():
    pred, target = _correlated(400)
    m = compute_metrics(pred, target, n_bootstrap=300, seed=3)
    assert set(m) == {
        "srcc", "plcc", "acc", "balanced_acc", "majority_acc", "mae", "n",
        "srcc_ci_low", "srcc_ci_high", "plcc_ci_low", "plcc_ci_high", "acc_ci_low", "acc_ci_high",
    }
    assert m["n"] == 400
    for key in ("srcc", "plcc", "acc"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]
    assert compute_metrics(pred, target, n_bootstrap=300, seed=3) == m
    assert compute_metrics(pred, target, n_bootstrap=300, seed=4) != m

    no_ci = compute_metrics(pred, target, n_bootstrap=0)
    assert set(no_ci) == {"srcc", "plcc", "acc", "balanced_acc", "majority_acc", "mae", "n"}
    assert no_ci["srcc"] == m["srcc"]


@pytest.mark.parametrize("n, ties", [(300, False), (40, True), (3, True)])
def test_bootstrap_srcc_matches_scipy_on_resamples(n, ties):
    # The bootstrap ranks resamples from draw counts instead of sorting; it must
    # agree with scipy, including ties, repeated draws and constant resamples.
    from mtpg_aiaa.eval.metrics import _bootstrap_srcc

    pred, target = _correlated(n, seed=11, ties=ties)
    idx = np.random.default_rng(0).integers(0, n, size=(50, n))
    groups = [np.unique(x, return_inverse=True)[1] for x in (pred, target)]
    fast = _bootstrap_srcc(idx, *groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = np.array([stats.spearmanr(pred[i], target[i])[0] for i in idx])
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_bootstrap_narrows_with_more_data():
    small = compute_metrics(*_correlated(200, seed=5), n_bootstrap=300)
    large = compute_metrics(*_correlated(5000, seed=5), n_bootstrap=300)
    for key in ("srcc", "plcc", "acc"):
        width_small = small[f"{key}_ci_high"] - small[f"{key}_ci_low"]
        width_large = large[f"{key}_ci_high"] - large[f"{key}_ci_low"]
        assert width_large < 0.5 * width_small


def test_bootstrap_at_full_baid_size_brackets_the_estimate():
    pred, target = _correlated(6400, seed=7)
    m = compute_metrics(pred, target, n_bootstrap=1000)
    assert m["srcc_ci_low"] < m["srcc"] < m["srcc_ci_high"]


@pytest.mark.parametrize(
    "pred, target, match",
    [
        ([0.1, 0.2, 0.3], [0.1, 0.2], "lengths differ"),
        ([0.1, np.nan, 0.3], [0.1, 0.2, 0.3], "non-finite"),
        ([0.1, 0.2, 0.3], [0.1, np.inf, 0.3], "non-finite"),
        ([[0.1, 0.2]], [[0.1, 0.2]], "1-D"),
        ([0.1], [0.2], "at least 2"),
    ],
)
def test_invalid_inputs_raise(pred, target, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(pred, target, n_bootstrap=10)


def test_constant_predictions_give_nan_with_warning():
    target = np.linspace(0, 1, 50)
    pred = np.full(50, 0.3)
    with pytest.warns(ConstantInputWarning):
        m = compute_metrics(pred, target, n_bootstrap=20)
    assert np.isnan(m["srcc"]) and np.isnan(m["plcc"]) and np.isnan(m["srcc_ci_low"])
    assert m["acc"] == pytest.approx(majority_accuracy(target, 0.5))
    assert "nan" in format_metrics_table(m)


def test_no_warning_for_ordinary_inputs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_metrics(*_correlated(30), n_bootstrap=200)


def test_format_metrics_table_contains_numbers():
    m = compute_metrics(*_correlated(300), n_bootstrap=100)
    text = format_metrics_table(m, title="BAID test")
    lines = text.splitlines()
    assert lines[0] == "BAID test"
    assert f"{m['srcc']:.4f}" in text and f"{m['plcc_ci_high']:.4f}" in text
    assert f"{100 * m['acc']:.2f} %" in text and f"{100 * m['acc_ci_low']:.2f} %" in text
    assert f"{100 * m['majority_acc']:.2f} %" in text and f"{m['mae']:.4f}" in text
    for label in ("SRCC", "PLCC", "Acc", "Balanced acc", "Majority floor", "MAE", "N", "95% CI"):
        assert label in text
    assert any(line.split()[:2] == ["N", "300"] for line in lines)


def test_save_scatter_plot_writes_png(tmp_path):
    from PIL import Image

    pred, target = _correlated(6400, seed=9)
    m = compute_metrics(pred, target, n_bootstrap=50)
    out = save_scatter_plot(pred, target, tmp_path / "plots" / "scatter.png", title="test", metrics=m)
    assert out == tmp_path / "plots" / "scatter.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (600, 600)
    # Overwrites in place and leaves no temporaries behind.
    save_scatter_plot(pred * 10, target * 10, out, threshold=5, scale_label="0-10")
    assert sorted(p.name for p in out.parent.iterdir()) == ["scatter.png"]


# -- one paired bootstrap (eval/bootstrap.py; its numbers: tests/test_bootstrap.py) for every experiment --
def test_every_experiment_uses_the_one_paired_bootstrap():
    import importlib

    from mtpg_aiaa.eval import bootstrap

    for name in ("mtpg_aiaa.experiments.aesnet.toy_claim", "mtpg_aiaa.experiments.cgiaa.toy_quickstart",
                 "mtpg_aiaa.experiments.mtpg.ablate"):  # fmt: skip
        module = importlib.import_module(name)
        assert module.paired_bootstrap is bootstrap.paired_bootstrap
        assert "def paired_bootstrap" not in open(module.__file__).read()
