"""Toy-HAND: per-attribute descriptions of the toy-art paintings written from their known
factors (mtpg_aiaa/data/toy.py), so that AesNet's pretraining can be measured on a CPU.

Four attributes describe what causes the score (colour harmony, balance, sharpness,
grain); ``content`` describes only what is painted and in which hue (the subject and the
palette temperature), which the score does not depend on. Each level is worded in one of
several ways, drawn per image from ``(seed, index)``, so equal levels do not always give
equal texts (ours; docs/aesnet.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TOY_ATTRIBUTES = ("content", "color", "composition", "depth_of_field", "technical_quality")
_LEVELS = ("very poor", "poor", "middling", "good", "excellent")
_WORDING = {
    "color": ("The colour harmony is {level}: a {scheme} palette.", "Its palette, {scheme}, is {level} in harmony."),
    "composition": ("The balance of the layout is {level}, weight towards the {side}.",
                    "Composition: {level} balance, the mass sits {side}."),
    "depth_of_field": ("Focus and sharpness are {level}.", "The rendering is {level} in sharpness."),
    "technical_quality": ("Technically {level}: {grain} grain.", "The surface is {level}, with {grain} noise."),
    "content": ("A {subject} in {temperature} hues.", "This shows a {subject}, painted in {temperature} tones."),
}  # fmt: skip


def _level(value: float) -> str:
    return _LEVELS[min(int(value * len(_LEVELS)), len(_LEVELS) - 1)]


def _temperature(hue: float) -> str:
    return "warm" if hue < 0.12 or hue > 0.92 else "earthy" if hue < 0.4 else "cool" if hue < 0.75 else "violet"


def describe_factors(row: pd.Series, rng: np.random.Generator) -> dict[str, str]:
    """One toy painting's factors -> ``{attribute: description}``."""
    values = {
        "color": {"level": _level(row["harmony"]), "scheme": row["scheme"]},
        "composition": {"level": _level(row["balance"]), "side": row["heavy_side"] if row["balance"] < 0.6 else "centre"},
        "depth_of_field": {"level": _level(row["sharpness"])},
        "technical_quality": {"level": _level(1 - row["grain"]), "grain": ("no", "faint", "some", "heavy", "dense")[
            min(int(row["grain"] * 5), 4)]},
        "content": {"subject": row["subject"], "temperature": _temperature(row["base_hue"])},
    }  # fmt: skip
    return {a: _WORDING[a][int(rng.integers(len(_WORDING[a])))].format(**values[a]) for a in TOY_ATTRIBUTES}


def write_toy_hand(toy_root: str | Path, out: str | Path, seed: int = 0) -> pd.DataFrame:
    """The toy set's ``factors.csv`` -> ``out``: ``image, split, score`` and one column per
    attribute (the canonical multi-text table plus the toy score)."""
    factors = pd.read_csv(Path(toy_root) / "factors.csv")
    rows = []
    for index, row in factors.iterrows():
        rng = np.random.default_rng([seed, int(index)])
        rows.append({"image": row["image"], "split": row["split"], "score": row["score"], **describe_factors(row, rng)})
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False)
    return table
