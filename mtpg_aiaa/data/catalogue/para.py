"""PARA (Yang et al., CVPR 2022): ``annotation/PARA-Giaa{Train,Test}.csv`` and ``imgs/<sessionId>/``.

The GIAA files hold one row per image: ``sessionId``, ``imageName``, the number of raters
who gave each aesthetic score 1.0, 1.5, ..., 5.0 (``aestheticScore_1.0``..``_5.0``, nine
bins, kept as ``dist_1..dist_9``), ``aestheticScore_mean`` (the score, 1-5) and the means
of the other attributes (kept as ``attr_<name>``). The release splits train / test.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import canonical_table, find_dir, find_file, parse_number, read_csv_rows, require_columns

SCALE_MAX = 5.0
BINS = tuple(f"aestheticScore_{1 + 0.5 * k:.1f}" for k in range(9))
ATTRIBUTES = ("qualityScore_mean", "compositionScore_mean", "colorScore_mean", "dofScore_mean", "lightScore_mean",
              "contentScore_mean", "contentPreference_mean", "willingnessToShare_mean")  # fmt: skip


@register_dataset("para")
def convert(root: Path) -> pd.DataFrame:
    root = Path(root)
    images = find_dir(root, ("imgs", "images"), "imgs")
    rows = []
    for split, name in (("train", "Train"), ("test", "Test")):
        path = find_file(root, (f"annotation/PARA-Giaa{name}.csv", f"PARA-Giaa{name}.csv"), f"PARA {split} labels")
        header, records = read_csv_rows(path)
        require_columns(path, header, ("sessionId", "imageName", "aestheticScore_mean"))
        bins = [column for column in BINS if column in header]
        for line, record in records:
            where = f"{path}, line {line}"
            row = {"image": f"{images}/{record['sessionId'].strip()}/{record['imageName'].strip()}",
                   "score": parse_number(record["aestheticScore_mean"], f"{where}, column 'aestheticScore_mean'"),
                   "split": split, "_where": where}  # fmt: skip
            if len(bins) == len(BINS):
                row.update({f"dist_{k + 1}": parse_number(record[c], f"{where}, column {c!r}") for k, c in enumerate(bins)})
            row.update({f"attr_{c.removesuffix('_mean')}": parse_number(record[c], f"{where}, column {c!r}")
                        for c in ATTRIBUTES if c in header})  # fmt: skip
            rows.append(row)
    return canonical_table(rows, SCALE_MAX, "para")
