"""Attribute critiques for the toy-art set (docs/toy_dataset.md), written from each picture's
known factors, so that what an expert should say about a toy picture is known exactly.

palette ``harmony`` -> colour, ``balance`` (and the heavy side) -> composition, ``sharpness``
-> depth and focus, the score's level -> general. Each factor is cut into three levels; the
files come out in the released formats (per-attribute JSON, and the critique cache CSV).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mtpg_aiaa.fileio import atomic_write

from .critique_data import write_critique_csv
from .generator import ATTRIBUTES

LEVEL_EDGES = (1 / 3, 2 / 3)  # factor levels: low < 1/3 <= mid < 2/3 <= high
SCORE_EDGES = (4.4, 5.2)  # toy scores (0-10, mean ~4.7): weak, average, strong
TEMPLATES = {
    "color": ("the colors clash and feel muddy.", "the colors are fine but a little scattered.",
              "the colors are harmonious and rich."),
    "composition": ("the composition is heavy on the {side} side.", "the composition is a little off balance.",
                    "the composition is well balanced."),
    "dof": ("the whole image is blurry.", "the focus is soft.", "the details are crisp and sharp."),
    "general": ("a weak painting overall.", "an average painting overall.", "a strong painting overall."),
}  # fmt: skip


def _level(value: float, edges: tuple[float, float]) -> int:
    return int(value >= edges[0]) + int(value >= edges[1])


def toy_critiques(factors: Mapping) -> dict[str, str]:
    """``{attribute: critique}`` for one toy picture's factors (a ``factors.csv`` row)."""
    levels = {
        "color": _level(float(factors["harmony"]), LEVEL_EDGES),
        "composition": _level(float(factors["balance"]), LEVEL_EDGES),
        "dof": _level(float(factors["sharpness"]), LEVEL_EDGES),
        "general": _level(float(factors["score"]), SCORE_EDGES),
    }
    return {name: TEMPLATES[name][levels[name]].format(side=factors.get("heavy_side", "left")) for name in ATTRIBUTES}


def toy_words() -> list[str]:
    """Every word of the templates (and "." ), for a small tokenizer that covers them."""
    words = {w.strip(".") for t in TEMPLATES.values() for s in t for w in s.replace("{side}", "left right").split()}
    return sorted(words)


def write_toy_critiques(factors_csv: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Critiques for every toy picture: ``out_dir/<split>/<attribute>.json`` (released format,
    ``img_id`` = image file stem) and ``out_dir/<split>_critiques.csv`` (cache format)."""
    factors = pd.read_csv(factors_csv, dtype={"image": str})
    out_dir, written = Path(out_dir), {}
    for split, rows in factors.groupby("split", sort=True):
        critiques = [{"image": r["image"], **toy_critiques(r)} for r in rows.to_dict("records")]
        for name in ATTRIBUTES:
            entries = [{"id": i, "img_id": Path(c["image"]).stem, "caption": c[name]} for i, c in enumerate(critiques)]
            path = out_dir / str(split) / f"{name}.json"
            atomic_write(path, lambda tmp, entries=entries: Path(tmp).write_text(json.dumps(entries), encoding="utf-8"))
            written[f"{split}/{name}"] = path
        written[f"{split}_csv"] = write_critique_csv(critiques, out_dir / f"{split}_critiques.csv")
    return written
