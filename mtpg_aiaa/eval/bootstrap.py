"""Paired bootstrap of a difference in SRCC between two models scored on the same images:
the one implementation the toy claims, the CG-IAA quickstart and the MTPG ablation share."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def srcc_rows(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``pred [R, n]`` with ``target [R, n]`` (ties averaged)."""
    a, b = rankdata(pred, axis=1), rankdata(target, axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def paired_bootstrap(pred_a: Sequence[np.ndarray], pred_b: Sequence[np.ndarray],
                     target: np.ndarray | Sequence[np.ndarray], n: int = 1000, seed: int = 0,
                     resample_runs: bool = False, block: int = 250) -> dict:  # fmt: skip
    """Mean over runs (training seeds) of SRCC(a) - SRCC(b), its 95 % percentile interval and the
    share of resamples <= 0.

    Args:
        pred_a, pred_b: one ``[N_r]`` array per run, aligned image by image with its target.
        target: ``[N]`` shared by every run, or one ``[N_r]`` per run (needs ``resample_runs``).
        resample_runs: ``False`` — the runs were tested on the same images: each resample draws
            one set of images for all runs. ``True`` — runs on different splits: each resample
            draws runs with replacement, then images within each drawn run (the same indices
            for a and b); ``block`` resamples are ranked at once.

    Returns:
        ``diff`` (observed), ``ci_low`` / ``ci_high``, ``p_le_0`` and ``per_run`` (each run's difference).
    """
    rng = np.random.default_rng(seed)
    shared = isinstance(target, np.ndarray) and target.ndim == 1
    targets = [np.asarray(target)] * len(pred_a) if shared else [np.asarray(t) for t in target]
    runs = list(zip(pred_a, pred_b, targets))
    per_run = [float(srcc_rows(a[None], t[None])[0] - srcc_rows(b[None], t[None])[0]) for a, b, t in runs]
    if resample_runs:
        draws = _resampling_runs(runs, n, rng, block)
    else:
        if not shared:
            raise ValueError("runs with different targets were tested on different images: pass resample_runs=True")
        draws = np.empty(n)
        for i in range(n):
            index = rng.integers(0, len(target), len(target))
            ranked = rankdata(target[index])
            draws[i] = np.mean([np.corrcoef(rankdata(a[index]), ranked)[0, 1] - np.corrcoef(rankdata(b[index]), ranked)[0, 1]
                                for a, b, _ in runs])  # fmt: skip
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"diff": float(np.mean(per_run)), "ci_low": float(low), "ci_high": float(high),
            "p_le_0": float((draws <= 0).mean()), "per_run": per_run}  # fmt: skip


def _resampling_runs(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int, rng: np.random.Generator,
                     block: int) -> np.ndarray:  # fmt: skip
    """``[n]`` resampled mean differences, runs drawn with replacement, images within each run."""
    chosen_runs = rng.integers(0, len(runs), size=(n, len(runs)))
    diffs = np.zeros((n, len(runs)))
    for k, (a, b, t) in enumerate(runs):
        chosen = np.flatnonzero((chosen_runs == k).any(1))  # resamples that drew run k at least once
        for start in range(0, len(chosen), block):
            rows = chosen[start : start + block]
            index = rng.integers(0, len(t), size=(len(rows), len(t)))
            diffs[rows, k] = srcc_rows(a[index], t[index]) - srcc_rows(b[index], t[index])
    # a run drawn twice counts twice, with one image resample
    return np.array([diffs[r, chosen_runs[r]].mean() for r in range(n)])
