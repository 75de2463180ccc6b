"""One prediction table for every system and every loop (images or cached features).

Names say the scale (one name per scale, everywhere a score is written):

- ``pred``: the model's score on its own ``score_range`` (``ScoreRange.bounded`` says whether
  it is held inside; CG-IAA's released linear head is not);
- ``pred_0_1`` / ``pred_0_10`` / ``pred_0_<S>``: the same score mapped linearly onto 0-1,
  0-10 or a data set's ``0-score_scale``;
- ``score`` / ``target``: the *label* as in the data table and on 0-1 (labelled data only);
- ``prob_<label>`` for a system with ``distribution_labels`` (MTPG-AIAA's five levels), else
  ``dist_1..dist_K``: the model's distribution, when it returns one.

A row also holds ``index`` (source row) and ``image``.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ..models.base import ScoreRange, Scorer

BASE_COLUMNS = ("index", "image", "score", "target", "pred", "pred_0_1")


def scaled_column(high: float) -> str:
    """The column name of a prediction mapped onto ``0-high`` (``pred_0_10``)."""
    return f"pred_0_{high:g}"


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
    ``collate_features`` (``index``, ``image_name``, and for labelled data ``score``,
    ``target``), ``outputs`` from the model (``score [B]``, optional ``distribution [B, K]``)."""
    score_range: ScoreRange = model.score_range
    distribution = outputs.get("distribution")
    distribution = distribution.detach().float().cpu() if distribution is not None else None
    if distribution is not None and model.score_is_expected_value:
        # Recomputed on CPU over the whole table's batch, as the release does, so the figures do
        # not depend on the device's matmul or on how many samples one forward pass held.
        score = distribution @ torch.tensor(model.distribution_values, dtype=distribution.dtype)
    else:
        score = outputs["score"].detach().float().cpu()
    columns: dict[str, list] = {"index": batch["index"].tolist(), "image": list(batch["image_name"])}
    if "score" in batch:
        columns["score"] = [float(s) for s in batch["score"]]
    if "target" in batch:
        columns["target"] = batch["target"].float().tolist()
    columns["pred"] = score.tolist()
    columns["pred_0_1"] = score_range.rescale(score, 0.0, 1.0).tolist()
    frame = pd.DataFrame(columns)
    if distribution is not None:
        for column, values in zip(distribution_columns(model, distribution.shape[1]), distribution.T):
            frame[column] = values.tolist()
    return frame


def empty_frame(model: Any = None) -> pd.DataFrame:
    return pd.DataFrame(columns=[*BASE_COLUMNS, *distribution_columns(model)])
