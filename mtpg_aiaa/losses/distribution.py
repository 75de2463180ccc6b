"""Losses between distributions over ordered bins (score levels, vote histograms)."""
from __future__ import annotations

import torch


def emd_loss(probs: torch.Tensor, target_dist: torch.Tensor, power: int = 2) -> torch.Tensor:
    """Earth mover's distance between ordered distributions ``[B, K]`` (NIMA's r-norm of CDFs):
    ``mean_b ( mean_k |CDF_p - CDF_t|^r )^(1/r)``, a scalar."""
    cdf_diff = probs.cumsum(dim=-1) - target_dist.cumsum(dim=-1)
    return cdf_diff.abs().pow(power).mean(dim=-1).pow(1.0 / power).mean()
