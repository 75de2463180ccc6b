"""Stage 2: fusion + aesthetic-level prompt learning on scored, described images."""
from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from ..data import AestheticsDataset, collate_samples, read_score_table
from ..evaluation import predict
from ..losses import score_losses
from ..metrics import compute_metrics
from ..transforms import build_transform
from .checkpointing import unwrap
from .seeding import PerSampleSeeded


class FinetuneTask:
    """Training batches -> weighted score losses; validation -> ``val/srcc`` etc.

    Args:
        model: the MTPG-AIAA model (its tokenizer, preprocessing and image size are used).
        train_table / val_table: tables from ``read_score_table``.
        loss_weights: e.g. ``{"fidelity": 1.0, "emd": 0.5}`` (see ``losses.score_losses``).
    """

    def __init__(self, model: nn.Module, train_table: pd.DataFrame, val_table: pd.DataFrame | None,
                 image_root: str, loss_weights: dict[str, float], level_sigma: float = 0.1,
                 eval_batch_size: int = 16, num_workers: int = 4, seed: int = 0,
                 on_bad_image: str = "error", max_pixels: int | None = None, score_scale: float = 10.0):  # fmt: skip
        base = unwrap(model)
        preprocess, size = base.config.preprocess, base.backbone.arch.image_size
        common = {"tokenize": base.tokenizer, "on_bad_image": on_bad_image}
        if max_pixels:
            common["max_pixels"] = max_pixels
        self.train_dataset = PerSampleSeeded(
            AestheticsDataset(train_table, image_root, build_transform(preprocess, size, train=True), **common), seed
        )
        self.val_dataset = (
            AestheticsDataset(val_table, image_root, build_transform(preprocess, size), **common)
            if val_table is not None and len(val_table) else None
        )  # fmt: skip
        self.loss_weights, self.level_sigma = dict(loss_weights), level_sigma
        self.eval_batch_size, self.num_workers, self.score_scale = eval_batch_size, num_workers, score_scale

    def collate(self, samples: list) -> dict:
        return collate_samples(samples)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        images = batch["image"].to(device, non_blocking=True)
        tokens = batch["description_tokens"].to(device, non_blocking=True)
        outputs = model(images, tokens)
        return score_losses(outputs, batch["target"].to(device).float(), self.loss_weights, self.level_sigma)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        loader = DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=collate_samples)  # fmt: skip
        predictions = predict(unwrap(model), loader, device, progress=False)
        table = predictions.table
        metrics = compute_metrics(table["pred"].to_numpy(), table["target"].to_numpy(), threshold=0.5, n_bootstrap=0)
        return {f"val/{k}": float(v) for k, v in metrics.items()}


def read_split_tables(data: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The training and (optional) validation tables named by a ``data`` config group."""
    if not data.train_csv:
        raise ValueError("data.train_csv is not set: pick a data group (data=baid data.root=...) or set data.train_csv")

    def table(csv):
        return read_score_table(csv, descriptions_csv=data.descriptions_csv, score_scale=data.score_scale,
                                description_column=data.description_column,
                                max_description_chars=data.max_description_chars)  # fmt: skip

    return table(data.train_csv), (table(data.val_csv) if data.val_csv else None)


def build_finetune_task(cfg: DictConfig, model: nn.Module) -> FinetuneTask:
    """Stage 2's task from the composed training config (``stage=finetune``)."""
    data = cfg.data
    train_table, val_table = read_split_tables(data)
    return FinetuneTask(
        model, train_table, val_table, data.image_root,
        loss_weights=dict(cfg.stage.losses), level_sigma=cfg.stage.level_sigma,
        eval_batch_size=cfg.trainer.eval_batch_size, num_workers=cfg.trainer.num_workers, seed=cfg.seed,
        on_bad_image=data.on_bad_image, max_pixels=data.max_pixels, score_scale=data.score_scale,
    )  # fmt: skip
