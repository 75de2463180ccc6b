"""Pieces the three CG-IAA tasks share: an image dataset over a table, and batching."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from ....data import load_rgb_image


class ImageRows(Dataset):
    """Row ``i`` of ``table`` -> ``{"image": [3, H, W], "index": i, "texts": {column: str}}``;
    images from ``image_root / table[column]``, texts from ``text_columns``."""

    def __init__(self, table: pd.DataFrame, image_root: str | Path, transform: Callable, column: str = "image",
                 text_columns: tuple[str, ...] = ()):  # fmt: skip
        self.table, self.root, self.transform, self.column = table.reset_index(drop=True), Path(image_root), transform, column
        self.text_columns = text_columns

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        image = self.transform(load_rgb_image(self.root / str(self.table[self.column][index])))
        return {"image": image, "index": index, "texts": {c: str(self.table[c][index]) for c in self.text_columns}}


def stack_images(samples: list[dict]) -> dict:
    """Images ``[B, 3, H, W]``, row indices ``[B]`` and ``texts {column: [B strings]}``."""
    columns = samples[0]["texts"] if samples else {}
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
        "texts": {c: [s["texts"][c] for s in samples] for c in columns},
    }


def trainable_names(module: torch.nn.Module) -> list[str]:
    return [name for name, parameter in module.named_parameters() if parameter.requires_grad]


def build_task_model(cfg) -> torch.nn.Module:
    """``train.py``'s model for a CG-IAA task (``task.build_model``): ``task.model``'s
    ``_target_`` built with its keys, then ``init_from`` tensors loaded where names and shapes
    match (a VLAP run's CLIP into a MAP scorer, an earlier expert into a new one)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ...builders import read_init_state, start_image_tower_from_aesnet

    model = instantiate(OmegaConf.to_container(cfg.task.model, resolve=True), _convert_="all")
    if cfg.get("init_from") and not start_image_tower_from_aesnet(model, cfg.init_from):
        own = model.state_dict()
        incoming = read_init_state(cfg.init_from)
        matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise ValueError(f"init_from={cfg.init_from}: no tensor matches {type(model).__name__}'s names and shapes")
        model.load_state_dict(matched, strict=False)
    return model
