"""The one paired bootstrap (mtpg_aiaa/eval/bootstrap.py): it sees a real difference and no
difference, both resampling schemes, and it reproduces the three copies it replaced (the
CG-IAA toy quickstart's and the AesNet toy claim's image resampling, the MTPG ablation's
seeds-then-images resampling) draw for draw."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from mtpg_aiaa.eval.bootstrap import paired_bootstrap, srcc_rows
from mtpg_aiaa.eval.metrics import srcc


def per_seed_predictions(seeds: int = 3, images: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=images)
    good = [target + 0.5 * rng.normal(size=images) for _ in range(seeds)]
    bad = [target + 2.0 * rng.normal(size=images) for _ in range(seeds)]
    return good, bad, target


def old_image_bootstrap(pred_a, pred_b, target, n, seed=0):
    """The loop the toy quickstart and the toy claim each carried (one image resample per
    draw, shared by the seeds), written out as they had it."""
    rng = np.random.default_rng(seed)
    observed = float(np.mean([srcc(a, target) - srcc(b, target) for a, b in zip(pred_a, pred_b)]))
    draws = []
    for _ in range(n):
        index = rng.integers(0, len(target), len(target))
        t = rankdata(target[index])
        draws.append(np.mean([np.corrcoef(rankdata(a[index]), t)[0, 1] - np.corrcoef(rankdata(b[index]), t)[0, 1]
                              for a, b in zip(pred_a, pred_b)]))  # fmt: skip
    draws = np.array(draws)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": observed, "low": low, "high": high, "p_le_0": float(np.mean(draws <= 0))}


def old_ablation_bootstrap(per_seed, n, seed=0, block=250):
    """The MTPG ablation's two-level loop (seeds, then images), as it had it."""
    rng = np.random.default_rng(seed)
    observed = [float(srcc(a, t) - srcc(b, t)) for a, b, t in per_seed]
    seeds = rng.integers(0, len(per_seed), size=(n, len(per_seed)))
    diffs = np.zeros((n, len(per_seed)))
    for k, (a, b, t) in enumerate(per_seed):
        chosen = np.flatnonzero((seeds == k).any(1))
        for start in range(0, len(chosen), block):
            rows = chosen[start : start + block]
            idx = rng.integers(0, len(t), size=(len(rows), len(t)))
            diffs[rows, k] = srcc_rows(a[idx], t[idx]) - srcc_rows(b[idx], t[idx])
    draws = np.array([diffs[r, seeds[r]].mean() for r in range(n)])
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": float(np.mean(observed)), "low": low, "high": high, "p_le_0": float((draws <= 0).mean()),
            "per_seed": observed}  # fmt: skip


@pytest.mark.parametrize("n", [1, 37, 601])  # fewer, as many as and more than one block of draws
def test_image_resampling_reproduces_the_quickstart_and_toy_claim_copies(n):
    good, bad, target = per_seed_predictions()
    new, old = paired_bootstrap(good, bad, target, n=n), old_image_bootstrap(good, bad, target, n=n)
    for key in ("diff", "low", "high", "p_le_0"):
        assert new[key] == pytest.approx(old[key], abs=1e-12), key


def test_seed_and_image_resampling_reproduces_the_ablation_copy():
    rng = np.random.default_rng(3)
    per_seed = []
    for _ in range(3):  # split seeds test different images, of different counts
        size = int(rng.integers(40, 90))
        target = rng.normal(size=size)
        per_seed.append((target + rng.normal(size=size), target + 1.5 * rng.normal(size=size), target))
    a, b, t = (list(part) for part in zip(*per_seed))
    new = paired_bootstrap(a, b, t, n=700, resample="seeds_and_images")
    old = old_ablation_bootstrap(per_seed, n=700)
    for key in ("diff", "low", "high", "p_le_0"):
        assert new[key] == pytest.approx(old[key], abs=1e-12), key
    assert new["per_seed"] == pytest.approx(old["per_seed"], abs=1e-12)


@pytest.mark.parametrize("resample", ["images", "seeds_and_images"])
def test_sees_a_real_difference_and_no_difference(resample):
    good, bad, target = per_seed_predictions(images=200)
    better = paired_bootstrap(good, bad, target, n=300, resample=resample)
    assert better["diff"] > 0.2 and better["low"] > 0 and better["p_le_0"] == 0.0
    worse = paired_bootstrap(bad, good, target, n=300, resample=resample)
    assert worse["diff"] == pytest.approx(-better["diff"]) and worse["p_le_0"] == 1.0
    same = paired_bootstrap(good, good, target, n=50, resample=resample)
    assert same["diff"] == 0 and same["low"] == same["high"] == 0
    assert len(better["per_seed"]) == 3


def test_the_two_levels_widen_the_interval_when_seeds_disagree():
    """Seeds whose differences scatter (+0.4, 0, -0.1): resampling seeds too must give a wider
    interval than resampling images alone."""
    rng = np.random.default_rng(5)
    target = rng.normal(size=300)
    a = [target + 0.3 * rng.normal(size=300) for _ in range(3)]
    b = [target + 3.0 * rng.normal(size=300), a[1] + 1e-9 * rng.normal(size=300), target + 0.2 * rng.normal(size=300)]
    images = paired_bootstrap(a, b, target, n=400)
    both = paired_bootstrap(a, b, target, n=400, resample="seeds_and_images")
    assert images["diff"] == pytest.approx(both["diff"])
    assert both["high"] - both["low"] > 1.5 * (images["high"] - images["low"])


def test_bad_inputs_are_named():
    good, bad, target = per_seed_predictions()
    with pytest.raises(ValueError, match="resample"):
        paired_bootstrap(good, bad, target, resample="pictures")
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_bootstrap(good, bad[:2], target)
    with pytest.raises(ValueError, match="seed 1"):
        paired_bootstrap(good, [bad[0], bad[1][:10], bad[2]], target)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([good[0][:30], good[1]], [bad[0][:30], bad[1]], [target[:30], target], resample="images")
