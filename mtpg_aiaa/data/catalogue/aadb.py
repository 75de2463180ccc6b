"""AADB (Kong et al., ECCV 2016): ``imgListFiles_label/`` and ``datasetImages_originalSize/``.

Each label file has one ``<image file> <value>`` line per image:
``imgList{Train,Validation,TestNew}Regression_score.txt`` hold the overall score (0-1);
``..._<Attribute>.txt`` the eleven attribute scores (-1..1), kept as ``attr_<attribute>``
when every split has them. The released splits are train / validation / test (the
``TestNew`` list; ``Test`` is used when a copy has only that).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import canonical_table, find_dir, parse_number
from ..errors import BadInputError

SCALE_MAX = 1.0
SPLIT_FILES = {"train": ("Train",), "val": ("Validation",), "test": ("TestNew", "Test")}
# The release's own spelling (BalacingElements included).
ATTRIBUTES = ("BalacingElements", "ColorHarmony", "Content", "DoF", "Light", "MotionBlur", "Object",
              "Repetition", "RuleOfThirds", "Symmetry", "VividColor")  # fmt: skip


def read_label_file(path: Path) -> dict[str, tuple[int, float]]:
    """``{image file: (line, value)}`` from one ``imgList*Regression_*.txt``; an image given
    twice with different values is an error naming both lines (the same value: kept once)."""
    values: dict[str, tuple[int, float]] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise BadInputError(f"{path}, line {line_number}: expected '<image> <value>', found {line!r}")
        value = parse_number(fields[1], f"{path}, line {line_number}")
        earlier = values.setdefault(fields[0], (line_number, value))
        if earlier[1] != value:
            raise BadInputError(f"{path}: image {fields[0]!r} has two values, {earlier[1]:g} on line {earlier[0]} "
                                f"and {value:g} on line {line_number}")  # fmt: skip
    return values


@register_dataset("aadb")
def convert(root: Path) -> pd.DataFrame:
    root = Path(root)
    labels = root / find_dir(root, ("imgListFiles_label", "imgListFiles_label/imgListFiles_label"), "imgListFiles_label")
    images = find_dir(root, ("datasetImages_originalSize", "datasetImages_warp256"), "datasetImages_originalSize")
    rows = []
    for split, names in SPLIT_FILES.items():
        prefix = next((f"imgList{name}Regression_" for name in names
                       if (labels / f"imgList{name}Regression_score.txt").is_file()), None)  # fmt: skip
        if prefix is None:
            raise BadInputError(f"AADB {split} scores not found in {labels} "
                                f"(imgList{names[0]}Regression_score.txt)")  # fmt: skip
        scores = read_label_file(labels / f"{prefix}score.txt")
        attributes = {name: read_label_file(labels / f"{prefix}{name}.txt") for name in ATTRIBUTES
                      if (labels / f"{prefix}{name}.txt").is_file()}  # fmt: skip
        for image, (line, score) in scores.items():
            row = {"image": f"{images}/{image}", "score": score, "split": split,
                   "_where": f"{labels / (prefix + 'score.txt')}, line {line}"}  # fmt: skip
            row.update({f"attr_{name}": values.get(image, (0, None))[1] for name, values in attributes.items()})
            rows.append(row)
    return canonical_table(rows, SCALE_MAX, "aadb")
