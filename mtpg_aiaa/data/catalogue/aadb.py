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


def read_label_file(path: Path) -> dict[str, float]:
    """``{image file: value}`` from one ``imgList*Regression_*.txt``."""
    values: dict[str, float] = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise BadInputError(f"{path}, line {line_number}: expected '<image> <value>', found {line!r}")
        values[fields[0]] = parse_number(fields[1], f"{path}, line {line_number}")
    return values


@register_dataset("aadb")
def convert(root: Path, **options) -> pd.DataFrame:
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
        for image, score in scores.items():
            row = {"image": f"{images}/{image}", "score": score, "split": split}
            row.update({f"attr_{name}": values.get(image) for name, values in attributes.items()})
            rows.append(row)
    return canonical_table(rows, SCALE_MAX, "aadb")
