"""One prediction table for every system and every loop (images or cached features).

A row: ``index`` (source row), ``image``, ``score`` (the label as in the file), ``target``
(the label on 0-1), ``pred`` (the model's score mapped from its ``score_range`` onto 0-1),
and, when the model returns a ``distribution [B, K]``, one column per bin: ``prob_<label>``
for a system with ``distribution_labels`` (MTPG-AIAA's five levels), else ``dist_1..dist_K``.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from .models.base import ScoreRange, Scorer

BASE_COLUMNS = ("index", "image", "score", "target", "pred")


def distribution_columns(model: Scorer, k: int | None = None) -> list[str]:
    """Column names of a model's distribution (``[]`` for a model that gives none)."""
    labels = model.distribution_labels
    if labels:
        return [f"prob_{label}" for label in labels]
    values = model.distribution_values
    k = k if k is not None else (len(values) if values else 0)
    return [f"dist_{i + 1}" for i in range(k)]


def prediction_frame(batch: dict[str, Any], outputs: dict[str, torch.Tensor], model: Scorer) -> pd.DataFrame:
    """The table rows of one scored batch: ``batch`` from ``collate_samples`` or
    ``collate_features`` (``index``, ``image_name``, ``score``, ``target``), ``outputs``
    from ``model(batch)`` or ``model.score_features`` (``score [B]``, optional ``distribution [B, K]``)."""
    score_range: ScoreRange = model.score_range
    distribution = outputs.get("distribution")
    distribution = distribution.detach().float().cpu() if distribution is not None else None
    if distribution is not None and model.score_is_expected_value:
        # Recomputed on CPU over the whole table's batch, as the release does, so the figures do
        # not depend on the device's matmul or on how many samples one forward pass held.
        score = distribution @ torch.tensor(model.distribution_values, dtype=distribution.dtype)
    else:
        score = outputs["score"].detach().float().cpu()
    pred = score_range.rescale(score, 0.0, 1.0)
    frame = pd.DataFrame({
        "index": batch["index"].tolist(),
        "image": list(batch["image_name"]),
        "score": [float(s) for s in batch["score"]],
        "target": batch["target"].float().tolist(),
        "pred": pred.tolist(),
    })  # fmt: skip
    if distribution is not None:
        for column, values in zip(distribution_columns(model, distribution.shape[1]), distribution.T):
            frame[column] = values.tolist()
    return frame


def empty_frame(model: Any = None) -> pd.DataFrame:
    return pd.DataFrame(columns=[*BASE_COLUMNS, *distribution_columns(model)])
