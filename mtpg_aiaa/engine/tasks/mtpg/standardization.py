"""Fitting the standardisation of the multi-level statistics that ``fusion=token`` reads.

``StandardizedProjection`` standardises each statistic with a mean and scale fitted once
on training images, and its linear map learns in that standardised space, so the two
belong together. Stage 1 fits them before it trains the fusion (its preference loss
scores views through the fusion); stage 2 fits them only when they arrive unfitted, and
otherwise keeps the standardisation the fusion weights were trained with (``init_from``).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ....data import collate_samples


def unfitted_statistics(base: nn.Module) -> list[str]:
    """The ``encode`` keys of the statistics whose standardisation is not fitted yet."""
    return [key for key in base.statistics_keys() if not bool(base.fusion.statistics[key].fitted)]


def sample_rows(num_rows: int, max_samples: int, seed: int) -> list[int]:
    """All rows when there are at most ``max_samples``, else a seeded random sample of
    ``max_samples`` (sorted), not the first rows of a table that may be ordered."""
    if num_rows <= max_samples:
        return list(range(num_rows))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(num_rows, generator=generator)[:max_samples].tolist())


@torch.no_grad()  # not inference_mode: the fitted buffers are used in training
def fit_statistics_standardization(base: nn.Module, dataset: Dataset, keys: list[str], batch_size: int = 16,
                                   num_workers: int = 0) -> int:  # fmt: skip
    """Fit the standardisation of ``keys`` on the images of ``dataset`` (``AestheticsDataset``
    samples, eval view) as the model encodes them now; returns the number of samples used."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples)
    device = next(base.parameters()).device
    was_training = base.training
    base.eval()
    values: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for batch in loader:
        if len(batch["index"]):
            features = base.encode(batch["image"].to(device), batch["description_tokens"].to(device))
            for key in keys:
                values[key].append(features[key].float().cpu())
    base.train(was_training)
    if not values[keys[0]]:
        raise ValueError("no training image could be read to fit the statistics' standardisation")
    for key in keys:
        statistics = base.fusion.statistics[key]
        statistics.fit(torch.cat(values[key]).to(statistics.mean.device))
    return sum(len(v) for v in values[keys[0]])
