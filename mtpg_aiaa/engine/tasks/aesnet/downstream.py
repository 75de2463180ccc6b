"""``aesnet/finetune`` (backbone + head trained) and ``aesnet/probe`` (frozen backbone, linear
head: the fair test of a pretraining) on any scored table of the catalogue.

Heads: ``regression`` (a score, MSE on the 0-1 target) or ``distribution`` (K bins, EMD-2
against the table's ``dist_1..dist_K`` vote counts, as NIMA trains on AVA). Validation
reports SRCC, PLCC, accuracy, RMSE and, with distributions, EMD-1 / EMD-2.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ....backbone.convert import CheckpointError, read_state_dict
from ....metrics import binary_accuracy, emd, plcc, rmse, srcc
from ....models.aesnet import AesNetScorer, AesNetScorerConfig
from ....models.checkpoints import is_training_checkpoint, read_weights_only
from ....models.aesnet.checkpoint import backbone_state_from
from ....models.mtpg.losses import emd_loss
from ...checkpointing import load_training_state, unwrap
from ...distributed import gather_with_grad
from ...seeding import PerSampleSeeded
from .data import TableImageDataset, collate_images

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


class DistributionDataset(TableImageDataset):
    """Adds ``distribution [K]`` (vote counts normalised) to each sample."""

    def __init__(self, *args, bins: int, **kwargs):
        super().__init__(*args, **kwargs)
        counts = self.table[distribution_columns(bins)].to_numpy(dtype=np.float64)
        sums = counts.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            row = int(np.argmax(sums[:, 0] <= 0))
            raise ValueError(f"row {row} ({self.table['image'].iloc[row]}): the vote counts sum to zero")
        self.distributions = torch.tensor(counts / sums, dtype=torch.float32)

    def __getitem__(self, index: int):
        sample = super().__getitem__(index)
        if not sample.get("skipped"):
            sample["distribution"] = self.distributions[index]
        return sample


def collate_scored(samples: list) -> dict:
    batch = collate_images(samples)
    good = [s for s in samples if not s.get("skipped")]
    if good and "distribution" in good[0]:
        batch["distribution"] = torch.stack([s["distribution"] for s in good])
    return batch


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
            common = {"score_scale": self.score_scale, "on_bad_image": on_bad_image}
            transform = base.build_transform(train=train)
            if self.head == "distribution":
                return DistributionDataset(table, image_root, transform, bins=self.bins, **common)
            return TableImageDataset(table, image_root, transform, **common)

        self.train_dataset = PerSampleSeeded(dataset(train_table, True), seed)
        self.val_dataset = dataset(val_table, False) if val_table is not None and len(val_table) else None

    def collate(self, samples: list) -> dict:
        return collate_scored(samples)

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

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        base = unwrap(model).eval()
        loader = DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=collate_scored)  # fmt: skip
        scores, targets, dists, target_dists = [], [], [], []
        for batch in loader:
            if not len(batch["index"]):
                continue
            outputs = base({"image": batch["image"].to(device)})
            scores.append(outputs["score"].float().cpu())
            targets.append(batch["target"])
            if "distribution" in outputs:
                dists.append(outputs["distribution"].float().cpu())
                target_dists.append(batch["distribution"])
        low, high = self.score_scale
        return score_metrics(torch.cat(scores).numpy(), low + (high - low) * torch.cat(targets).numpy(),
                             threshold=(low + high) / 2,
                             distributions=(torch.cat(dists).numpy(), torch.cat(target_dists).numpy()) if dists else None)  # fmt: skip


def score_metrics(pred: np.ndarray, target: np.ndarray, threshold: float,
                  distributions: tuple[np.ndarray, np.ndarray] | None = None, prefix: str = "val") -> dict[str, float]:  # fmt: skip
    """SRCC, PLCC, accuracy at ``threshold``, RMSE (and EMD-1 / EMD-2 with distributions)."""
    metrics = {f"{prefix}/srcc": srcc(pred, target), f"{prefix}/plcc": plcc(pred, target),
               f"{prefix}/acc": binary_accuracy(pred, target, threshold), f"{prefix}/rmse": rmse(pred, target)}  # fmt: skip
    if distributions is not None:
        metrics[f"{prefix}/emd1"] = emd(*distributions, r=1)
        metrics[f"{prefix}/emd2"] = emd(*distributions, r=2)
    return metrics


def read_backbone_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """Backbone tensors from a saved backbone (timm / open_clip layout), an AesNet run
    directory or training checkpoint (``last.pt`` / ``best.pt``), or a scorer file."""
    source = Path(source)
    if source.is_dir():
        found = next((source / n for n in ("best.pt", "last.pt") if (source / n).is_file()), None)
        if found is None:
            raise CheckpointError(f"{source}: no best.pt or last.pt inside")
        source = found
    if source.suffix == ".pt":
        if is_training_checkpoint(read_weights_only(source)):
            state = backbone_state_from(load_training_state(source)["model"])
            if not state:
                raise CheckpointError(f"{source}: a training checkpoint without an AesNet backbone")
            return state
    state = read_state_dict(source)
    nested = backbone_state_from(state)
    return nested or state


def build_scorer_model(cfg: DictConfig) -> AesNetScorer:
    """The scorer of ``cfg.task.model``, its backbone from ``task.init_backbone`` when given."""
    spec = cfg.task.model
    config = AesNetScorerConfig(encoder=spec.encoder, image_size=spec.get("image_size"), head=spec.head,
                                bins=int(spec.bins), score_low=float(spec.score_low),
                                score_high=float(spec.score_high), frozen_backbone=bool(cfg.task.frozen_backbone))  # fmt: skip
    scorer = AesNetScorer(config, encoder_weights=spec.get("encoder_weights"))
    if cfg.task.get("init_backbone"):
        state = read_backbone_weights(cfg.task.init_backbone)
        if scorer.backbone.library == "open_clip":
            state = {k.removeprefix("visual."): v for k, v in state.items()}
        try:
            scorer.backbone.model.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"task.init_backbone={cfg.task.init_backbone}: {error}") from error
        log.info("backbone from %s (%d tensors)", cfg.task.init_backbone, len(state))
    return scorer


def build_score_task(cfg: DictConfig, model: nn.Module) -> AesNetScoreTask:
    """``task=aesnet/finetune`` or ``task=aesnet/probe`` from the composed config."""
    task, head = cfg.task, cfg.task.model.head
    bins = int(task.model.bins) if head == "distribution" else None
    train_table = read_score_rows(task.data.table, task.data.get("train_split"), bins)
    val_table = read_score_rows(task.data.table, task.data.val_split, bins) if task.data.get("val_split") else None
    return AesNetScoreTask(model, train_table, val_table, task.data.image_root,
                           eval_batch_size=cfg.trainer.get("eval_batch_size", 64),
                           num_workers=cfg.trainer.num_workers, seed=cfg.seed,
                           on_bad_image=task.data.get("on_bad_image", "error"))  # fmt: skip
