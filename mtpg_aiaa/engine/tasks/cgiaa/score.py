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
from torch.utils.data import DataLoader

from ....data import AestheticsDataset, BadInputError, collate_samples
from ....eval.metrics import plcc, srcc
from ....eval.predict import predict
from ....models.cgiaa.critique_data import read_critique_csv
from ....models.cgiaa.losses import score_loss
from ...checkpointing import unwrap


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
        counts = [f"count_{k}" for k in range(1, self.bins + 1)]

        def dataset(table: pd.DataFrame, train: bool) -> AestheticsDataset:
            votes = counts if self.bins and all(c in table.columns for c in counts) else None
            return AestheticsDataset(table, image_root, scorer.build_transform(train=train), text_names=names,
                                     distribution_columns=votes)  # fmt: skip

        self.train_dataset, self.val_dataset = dataset(train, augment), dataset(val, False)
        self.scorer = scorer

    def collate(self, samples: list) -> dict:
        """``collate_samples`` plus the critiques' ``tokens`` and ``labels`` (``score [B]`` on the
        table's scale, ``distribution [B, K]`` from the vote counts of a K-bin scorer)."""
        batch = collate_samples(samples)
        texts = batch.pop("texts", {})  # none for a scorer that reads no critique (image only)
        batch["tokens"] = self.scorer.tokenize({name: texts[name] for name in self.scorer.text_names})
        batch["labels"] = {"score": batch["score"].float()}
        if "distribution" in batch:
            batch["labels"]["distribution"] = batch.pop("distribution")
        return batch

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        inputs = {"image": batch["image"].to(device), "tokens": {k: v.to(device) for k, v in batch["tokens"].items()}}
        labels = batch["labels"]
        distribution = labels.get("distribution")
        loss = score_loss(model(inputs), labels["score"].to(device), None if distribution is None else distribution.to(device))
        return {"loss": loss}

    def validate(self, model: nn.Module, device: torch.device, batch_size: int = 32) -> dict[str, float]:
        """SRCC and PLCC of the model's scores against the labels (the one loop, ``eval.predict``)."""
        loader = DataLoader(self.val_dataset, batch_size=batch_size, shuffle=False, collate_fn=self.collate)
        table = predict(unwrap(model), loader, device, progress=False).table
        pred, target = table["pred"].to_numpy(), table["score"].to_numpy()
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
