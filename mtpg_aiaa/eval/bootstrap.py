"""The paired bootstrap of a metric difference between two systems scored on the same images.

One function for every comparison in the project (the toy quickstarts, the toy claims, the
MTPG ablation and the cross-system comparison). Its inputs are *per-seed paired predictions*:
for each training seed (or split seed) ``s``, ``pred_a[s]`` and ``pred_b[s]`` score the same
images, whose targets are ``target[s]`` (or one ``target`` shared by every seed). The
statistic is the mean over seeds of ``SRCC(a) - SRCC(b)``.

Two resampling schemes (``resample``):

- ``"images"``: one resample of the images per draw, shared by every seed. The interval
  covers the choice of test images only (the seeds' spread is averaged, not resampled).
- ``"seeds_and_images"``: two levels. Each draw picks the seeds with replacement, then, for
  each seed picked, the images with replacement (the same indices for ``a`` and ``b``; a
  seed picked twice counts twice, with one image resample). The interval then includes the
  run-to-run spread as well as the choice of images.

Reported: ``diff`` (the observed mean difference), ``low`` / ``high`` (the 95 % percentile
interval), ``p_le_0`` (the share of draws with a difference <= 0: one-sided, "a beats b")
and ``per_seed`` (the observed difference of each seed).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

RESAMPLING = ("images", "seeds_and_images")


def srcc_rows(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``pred [R, N]`` with ``target [R, N]`` (ties averaged) -> ``[R]``."""
    a, b = rankdata(pred, axis=1), rankdata(target, axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def paired_bootstrap(pred_a: Sequence[np.ndarray], pred_b: Sequence[np.ndarray],
                     target: np.ndarray | Sequence[np.ndarray], n: int = 1000, seed: int = 0,
                     resample: str = "images", block: int = 250) -> dict:  # fmt: skip
    """Paired bootstrap of the mean over seeds of SRCC(a) - SRCC(b).

    Args:
        pred_a, pred_b: one prediction array ``[N_s]`` per seed, aligned by image.
        target: ``[N]`` shared by every seed, or one ``[N_s]`` per seed (split seeds test
            different images).
        n: draws; seed: the generator's seed; block: draws scored at once (memory ``block x N``).
        resample: ``"images"`` or ``"seeds_and_images"`` (module docstring).

    Returns:
        ``{"diff", "low", "high", "p_le_0", "per_seed": [S]}``.
    """
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {RESAMPLING}, got {resample!r}")
    if len(pred_a) != len(pred_b) or not len(pred_a):
        raise ValueError(f"pred_a and pred_b need the same number of seeds (>= 1), got {len(pred_a)} and {len(pred_b)}")
    shared = isinstance(target, np.ndarray) and target.ndim == 1
    targets = [np.asarray(target, dtype=np.float64)] * len(pred_a) if shared else [np.asarray(t, dtype=np.float64) for t in target]
    if len(targets) != len(pred_a):
        raise ValueError(f"{len(targets)} targets for {len(pred_a)} seeds")
    per_seed = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), t)
                for a, b, t in zip(pred_a, pred_b, targets)]  # fmt: skip
    for k, (a, b, t) in enumerate(per_seed):
        if not a.shape == b.shape == t.shape or a.ndim != 1:
            raise ValueError(f"seed {k}: pred_a {a.shape}, pred_b {b.shape} and target {t.shape} must be equal 1-D shapes")
    rng = np.random.default_rng(seed)
    observed = [float(srcc_rows(a[None], t[None])[0] - srcc_rows(b[None], t[None])[0]) for a, b, t in per_seed]
    if resample == "images":
        draws = _draws_images(per_seed, n, rng, block)
    else:
        draws = _draws_seeds_and_images(per_seed, n, rng, block)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": float(np.mean(observed)), "low": float(low), "high": float(high),
            "p_le_0": float(np.mean(draws <= 0)), "per_seed": observed}  # fmt: skip


def _draws_images(per_seed: list, n: int, rng: np.random.Generator, block: int) -> np.ndarray:
    """One image resample per draw, shared by every seed (the seeds must share their images)."""
    size = len(per_seed[0][2])
    if any(len(t) != size for *_, t in per_seed):
        raise ValueError("resample='images' needs every seed scored on the same images")
    draws = np.empty(n)
    for start in range(0, n, block):
        index = rng.integers(0, size, size=(min(block, n - start), size))
        draws[start : start + len(index)] = np.mean(
            [srcc_rows(a[index], t[index]) - srcc_rows(b[index], t[index]) for a, b, t in per_seed], axis=0)
    return draws


def _draws_seeds_and_images(per_seed: list, n: int, rng: np.random.Generator, block: int) -> np.ndarray:
    """Seeds with replacement, then images with replacement within each seed picked."""
    seeds = rng.integers(0, len(per_seed), size=(n, len(per_seed)))
    differences = np.zeros((n, len(per_seed)))
    for k, (a, b, t) in enumerate(per_seed):
        chosen = np.flatnonzero((seeds == k).any(1))  # draws that picked seed k at least once
        for start in range(0, len(chosen), block):
            rows = chosen[start : start + block]
            index = rng.integers(0, len(t), size=(len(rows), len(t)))
            differences[rows, k] = srcc_rows(a[index], t[index]) - srcc_rows(b[index], t[index])
    return np.array([differences[r, seeds[r]].mean() for r in range(n)])
