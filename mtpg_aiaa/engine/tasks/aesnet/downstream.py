"""``aesnet/finetune`` (backbone + head trained) and ``aesnet/probe`` (frozen backbone, linear
head: the fair test of a pretraining) on any scored table of the catalogue.

Heads: ``regression`` (a score, MSE on the 0-1 target) or ``distribution`` (K bins, EMD-2
against the table's ``dist_1..dist_K`` vote counts, as NIMA trains on AVA). Validation
reports SRCC, PLCC, accuracy, RMSE and, with distributions, EMD-1 / EMD-2.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from ....data.dataset import collate_samples
from ....eval.metrics import binary_accuracy, emd, plcc, rmse, srcc
from ....eval.predict import predict
from ....models.aesnet import AesNetScorer
from ....losses import emd_loss
from ...checkpointing import unwrap
from ...distributed import gather_with_grad
from ...seeding import PerSampleSeeded
from .data import table_image_dataset

log = logging.getLogger(__name__)


def distribution_columns(bins: int) -> list[str]:
    return [f"dist_{k}" for k in range(1, bins + 1)]


def read_score_rows(path: str | Path, split: str | None, bins: int | None = None) -> pd.DataFrame:
    """Rows of a canonical score table (``image``, ``score``, optional ``split`` and
    ``dist_1..dist_K``); errors name the file and the column or row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score table not found: {path}")
    table = pd.read_csv(path, keep_default_na=False)
    needed = ["image", "score"] + (distribution_columns(bins) if bins else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if split is not None and "split" in table.columns:
        table = table[table["split"] == split]
    table = table.reset_index(drop=True)
    scores = pd.to_numeric(table["score"], errors="coerce")
    if scores.isna().any():
        row = int(scores.isna().idxmax())
        raise ValueError(f"{path}: score of {table['image'][row]} is not a number")
    table["score"] = scores.astype(float)
    return table


class AesNetScoreTask:
    """Scored rows -> the scorer's loss; validation -> ``val/srcc`` etc. on the val rows."""

    def __init__(self, model: AesNetScorer, train_table: pd.DataFrame, val_table: pd.DataFrame | None,
                 image_root: str, eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 on_bad_image: str = "error"):  # fmt: skip
        base = unwrap(model)
        self.head, self.bins = base.scorer_config.head, base.scorer_config.bins
        self.score_scale = (base.score_range.low, base.score_range.high)
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers

        def dataset(table, train):
            votes = distribution_columns(self.bins) if self.head == "distribution" else None
            return table_image_dataset(table, image_root, base.build_transform(train=train), score_scale=self.score_scale,
                                       on_bad_image=on_bad_image, distribution_columns=votes)  # fmt: skip

        self.train_dataset = PerSampleSeeded(dataset(train_table, True), seed)
        self.val_dataset = dataset(val_table, False) if val_table is not None and len(val_table) else None

    def collate(self, samples: list) -> dict:
        return collate_samples(samples)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        base = unwrap(model)
        outputs = base({"image": batch["image"].to(device, non_blocking=True)})
        if self.head == "distribution":
            predicted = gather_with_grad(outputs["distribution"])
            loss = emd_loss(predicted, gather_with_grad(batch["distribution"].to(device)), power=2)
            return {"loss": loss, "emd": loss.detach()}
        low, high = self.score_scale
        predicted = gather_with_grad((outputs["score"] - low) / (high - low))
        loss = nn.functional.mse_loss(predicted, gather_with_grad(batch["target"].to(device)))
        return {"loss": loss, "mse": loss.detach()}

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Metrics of the model's scores on the val rows, scored by the one loop (``eval.predict``)."""
        if self.val_dataset is None:
            return {}
        loader = DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=collate_samples)  # fmt: skip
        table = predict(unwrap(model), loader, device, progress=False).table
        low, high = self.score_scale
        distributions = None
        if self.head == "distribution":
            columns = [c for c in table.columns if c.startswith(("dist_", "prob_"))]
            counts = self.val_dataset.distributions[torch.tensor(table["index"].tolist(), dtype=torch.long)]
            distributions = (table[columns].to_numpy(), (counts / counts.sum(dim=1, keepdim=True)).numpy())
        return score_metrics(table["pred"].to_numpy(), table["score"].to_numpy(), threshold=(low + high) / 2,
                             distributions=distributions)  # fmt: skip


def score_metrics(pred: np.ndarray, target: np.ndarray, threshold: float,
                  distributions: tuple[np.ndarray, np.ndarray] | None = None, prefix: str = "val") -> dict[str, float]:  # fmt: skip
    """SRCC, PLCC, accuracy at ``threshold``, RMSE (and EMD-1 / EMD-2 with distributions)."""
    metrics = {f"{prefix}/srcc": srcc(pred, target), f"{prefix}/plcc": plcc(pred, target),
               f"{prefix}/acc": binary_accuracy(pred, target, threshold), f"{prefix}/rmse": rmse(pred, target)}  # fmt: skip
    if distributions is not None:
        metrics[f"{prefix}/emd1"] = emd(*distributions, r=1)
        metrics[f"{prefix}/emd2"] = emd(*distributions, r=2)
    return metrics


def build_score_task(model: nn.Module, data: Mapping, head: str, bins: int, eval_batch_size: int = 64,
                     num_workers: int = 0, seed: int = 0) -> AesNetScoreTask:  # fmt: skip
    """``task=aesnet/finetune`` or ``task=aesnet/probe`` (``configs/task/aesnet/finetune.yaml``):
    ``model`` the scorer of ``model=aesnet/scorer`` (frozen for the probe by ``model.freeze``);
    ``data`` the table, image root, splits and ``on_bad_image``; ``head``/``bins`` the scorer's
    (a ``distribution`` head reads ``dist_1..dist_<bins>``)."""
    bins = int(bins) if head == "distribution" else None
    train_table = read_score_rows(data["table"], data.get("train_split"), bins)
    val_table = read_score_rows(data["table"], data["val_split"], bins) if data.get("val_split") else None
    return AesNetScoreTask(model, train_table, val_table, data["image_root"], eval_batch_size=eval_batch_size,
                           num_workers=num_workers, seed=seed, on_bad_image=data.get("on_bad_image", "error"))  # fmt: skip
