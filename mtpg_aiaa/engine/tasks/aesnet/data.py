"""AesNet's training data: the canonical multi-text table (``image`` + one column per
attribute, empty when missing; optional ``split`` and ``score``), its images, and the
frozen description features looked up by row."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ....data.dataset import AestheticsDataset
from ....data.errors import BadInputError
from ....models.aesnet.text import DescriptionFeatureCache


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


def table_image_dataset(table: pd.DataFrame, image_root: str | Path, transform: Callable[[Any], torch.Tensor],
                        score_scale: tuple[float, float] | None = None, on_bad_image: str = "error",
                        distribution_columns: list[str] | None = None) -> AestheticsDataset:  # fmt: skip
    """The rows of an AesNet table as the one image dataset (``data.AestheticsDataset``):
    ``image``, ``index``, and with ``score_scale=(low, high)`` and a ``score`` column the label
    ``score`` and ``target`` (``(score - low) / (high - low)``, 0-1); ``distribution [K]`` from
    ``distribution_columns`` (vote counts, normalised). Batches with ``collate_samples``."""
    table = table.reset_index(drop=True)
    if score_scale is not None and "score" in table.columns:
        low, high = score_scale
        table = table.assign(target=(table["score"].astype(float) - low) / (high - low))
    else:  # a pretraining table's optional score is no label here
        table = table.drop(columns=[c for c in ("score", "target") if c in table.columns])
    return AestheticsDataset(table, image_root, transform, on_bad_image=on_bad_image,
                             distribution_columns=distribution_columns)  # fmt: skip
