"""AesNet's training data: the canonical multi-text table (``image`` + one column per
attribute, empty when missing; optional ``split`` and ``score``), its images, and the
frozen description features looked up by row."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from ....data.errors import BadInputError
from ....data.images import load_rgb_image
from ....models.aesnet.text import DescriptionFeatureCache

log = logging.getLogger(__name__)


def read_attribute_table(path: str | Path, attributes: Sequence[str], split: str | None = None) -> pd.DataFrame:
    """The rows of a multi-text CSV (of ``split`` when given and the table has a ``split``
    column). Every attribute column must exist; empty cells mean "no description"."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"attribute table not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", *attributes) if c not in table.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; has {list(table.columns)}")
    if split is not None and "split" in table.columns:
        table = table[table["split"] == split]
    table = table.reset_index(drop=True)
    for name in attributes:
        table[name] = table[name].str.strip()
    if "score" in table.columns:
        bad = pd.to_numeric(table["score"], errors="coerce").isna()
        if bad.any():
            row = int(bad.idxmax())
            raise BadInputError(f"{path}: score {table['score'][row]!r} of {table['image'][row]} is not a number")
        table["score"] = table["score"].astype(float)
    return table


class TextFeatureIndex:
    """Per row and attribute, where its description's frozen feature sits in a cache.

    Built once from the table (each distinct description encoded once);
    ``lookup(rows)`` returns ``({a: [B, E]}, {a: [B] bool})``.
    """

    def __init__(self, cache: DescriptionFeatureCache, table: pd.DataFrame, attributes: Sequence[str]):
        self.attributes = tuple(attributes)
        self.features: dict[str, torch.Tensor] = {}
        self.present: dict[str, torch.Tensor] = {}
        for name in self.attributes:
            # Stored per attribute as [N, E]; rows without a description hold zeros.
            self.features[name], self.present[name] = cache.features(table[name].tolist())

    def lookup(self, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return ({a: self.features[a][rows] for a in self.attributes},
                {a: self.present[a][rows] for a in self.attributes})  # fmt: skip

    def counts(self) -> dict[str, int]:
        return {a: int(self.present[a].sum()) for a in self.attributes}


class TableImageDataset(Dataset):
    """``{"index", "image" [3, H, W]}`` (and ``target`` when the table has ``score``) per row.

    Args:
        score_scale: ``(low, high)`` mapping ``score`` to ``target`` on 0-1.
        on_bad_image: ``error`` | ``skip`` (a skipped row yields ``{"skipped": True, ...}``).
    """

    def __init__(self, table: pd.DataFrame, image_root: str | Path, transform: Callable[[Any], torch.Tensor],
                 score_scale: tuple[float, float] | None = None, on_bad_image: str = "error"):  # fmt: skip
        self.table, self.image_root, self.transform = table, Path(image_root), transform
        self.score_scale, self.on_bad_image = score_scale, on_bad_image

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.table["image"].iloc[index]
        try:
            image = load_rgb_image(self.image_root / name)
        except (OSError, BadInputError, ValueError) as error:
            if self.on_bad_image == "skip":
                log.warning("skipping %s: %s", name, error)
                return {"skipped": True, "index": index, "image_name": name, "reason": str(error)}
            raise
        sample = {"index": index, "image": self.transform(image)}
        if self.score_scale is not None and "score" in self.table.columns:
            low, high = self.score_scale
            sample["target"] = torch.tensor((float(self.table["score"].iloc[index]) - low) / (high - low),
                                            dtype=torch.float32)  # fmt: skip
        return sample


def collate_images(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the good samples; ``index`` is empty when every sample was skipped."""
    good = [s for s in samples if not s.get("skipped")]
    batch: dict[str, Any] = {"index": torch.tensor([s["index"] for s in good], dtype=torch.long)}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        if "target" in good[0]:
            batch["target"] = torch.stack([s["target"] for s in good])
    return batch
