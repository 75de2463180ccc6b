"""``cgiaa/score``: MAP — the CG-IAA scorer trained on images, their cached critiques and scores.

Labels: a CSV ``image,score`` (plus ``count_1..count_K`` vote counts for a K-bin scorer, as
AVA gives them). Critiques: the cache CSV ``image,color,composition,dof,general`` written once
by the frozen generator (``scripts/critique.py --csv`` / ``critique_data.write_critique_csv``);
a labelled image without critiques is an error naming it. Loss: EMD to the vote distribution
for a K-bin scorer, otherwise MSE to the score. Validation: SRCC and PLCC.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ....data import BadInputError
from mtpg_aiaa.eval.metrics import plcc, srcc
from ....models.cgiaa.critique_data import read_critique_csv
from ....models.cgiaa.losses import score_loss
from .common import ImageRows, stack_images


def join_critiques(labels: pd.DataFrame, critiques: pd.DataFrame, source: str) -> pd.DataFrame:
    """Labels with their four critiques; a labelled image absent from the cache is named."""
    merged = labels.merge(critiques, on="image", how="left", indicator=True)
    absent = merged["image"][merged["_merge"] == "left_only"]
    if len(absent):
        raise BadInputError(f"{source}: no critiques for image {absent.iloc[0]!r} ({len(absent)} in all)")
    return merged.drop(columns="_merge")


class ScoreTask:
    def __init__(self, scorer: nn.Module, train: pd.DataFrame, val: pd.DataFrame, image_root: str | Path, augment: bool = True):
        names = tuple(scorer.text_names)
        self.bins = int(getattr(scorer.config, "bins", 0))
        self.train_dataset = ImageRows(train, image_root, scorer.build_transform(train=augment), text_columns=names)
        self.val_dataset = ImageRows(val, image_root, scorer.build_transform(train=False), text_columns=names)
        self.scorer = scorer

    def _targets(self, table: pd.DataFrame, index: torch.Tensor) -> dict:
        rows = table.iloc[index.tolist()]
        out = {"score": torch.tensor(rows["score"].astype(float).to_numpy(), dtype=torch.float32)}
        counts = [f"count_{k}" for k in range(1, self.bins + 1)]
        if self.bins and all(c in table.columns for c in counts):
            votes = torch.tensor(rows[counts].astype(float).to_numpy(), dtype=torch.float32)
            out["distribution"] = votes / votes.sum(dim=1, keepdim=True).clamp(min=1e-8)
        return out

    def collate(self, samples: list, table: pd.DataFrame | None = None) -> dict:
        batch = stack_images(samples)
        batch["tokens"] = self.scorer.tokenize(batch.pop("texts"))
        batch["target"] = self._targets(self.train_dataset.table if table is None else table, batch["index"])
        return batch

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        inputs = {"image": batch["image"].to(device), "tokens": {k: v.to(device) for k, v in batch["tokens"].items()}}
        target = batch["target"]
        distribution = target.get("distribution")
        loss = score_loss(model(inputs), target["score"].to(device), None if distribution is None else distribution.to(device))
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, batch_size: int = 32) -> dict[str, float]:
        predictions, targets = [], []
        data = self.val_dataset
        for start in range(0, len(data), batch_size):
            batch = self.collate([data[i] for i in range(start, min(start + batch_size, len(data)))], data.table)
            inputs = {"image": batch["image"].to(device), "tokens": {k: v.to(device) for k, v in batch["tokens"].items()}}
            predictions.append(model(inputs)["score"].float().cpu())
            targets.append(batch["target"]["score"])
        pred, target = torch.cat(predictions).numpy(), torch.cat(targets).numpy()
        return {"val/srcc": srcc(pred, target), "val/plcc": plcc(pred, target)}


def build_score_task(model: nn.Module, critiques_csv: str, train_csv: str, val_csv: str, image_root: str,
                     augment: bool = True) -> ScoreTask:  # fmt: skip
    """``task=cgiaa/score`` (``configs/task/cgiaa/score.yaml``): ``model`` a ``CGIAAScorer``;
    ``critiques_csv`` its critique cache, joined to the ``image,score`` tables of each split."""
    critiques = read_critique_csv(critiques_csv, model.text_names)
    tables = {}
    for split, csv in (("train", train_csv), ("val", val_csv)):
        labels = pd.read_csv(csv, dtype={"image": str})
        tables[split] = join_critiques(labels, critiques, str(csv))
    return ScoreTask(model, tables["train"], tables["val"], image_root, augment=augment)
