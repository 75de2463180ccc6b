"""APDDv2 (Jin et al., 2024): ``APDDv2-10023.csv`` and ``APDDv2images/``.

One row per painting: ``filename``, ``Artistic Categories``, ``Total aesthetic score``
(0-10), ten attribute scores (some empty: not every painting was rated on every
attribute) and ``Language Comment`` (artists' comments, for about 6,000 paintings). The
file is not UTF-8 throughout, so it is read as UTF-8 and else as Latin-1.

The release has no split: ours is a seeded random one (``val_fraction``, ``test_fraction``,
``seed``; docs/data.md). Paintings without a total score are left out and counted.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import canonical_table, find_dir, find_file, parse_number, random_splits, read_csv_rows, require_columns
from ...errors import SettingError

log = logging.getLogger(__name__)
SCALE_MAX = 10.0
SCORE_COLUMN = "Total aesthetic score"
ATTRIBUTES = ("Theme and logic", "Creativity", "Layout and composition", "Space and perspective",
              "The sense of order", "Light and shadow", "Color", "Details and texture", "The overall", "Mood")  # fmt: skip


@register_dataset("apdd")
def convert(root: Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    root = Path(root)
    if not (0.0 <= val_fraction and 0.0 <= test_fraction and val_fraction + test_fraction < 1.0):
        raise SettingError(f"apdd: options val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                           "at least 0 and leave some training images (sum below 1)")  # fmt: skip
    path = find_file(root, ("APDDv2-10023.csv",), "the APDDv2 annotation file")
    header, records = read_csv_rows(path, encodings=("utf-8-sig", "latin-1"))
    require_columns(path, header, ("filename", SCORE_COLUMN))
    images = find_dir(root, ("APDDv2images", "images"), "APDDv2images")
    rows, unscored = [], 0
    for line, record in records:
        where = f"{path}, line {line}"
        if not record[SCORE_COLUMN].strip():
            unscored += 1
            continue
        row = {"image": f"{images}/{record['filename'].strip()}",
               "score": parse_number(record[SCORE_COLUMN], f"{where}, column {SCORE_COLUMN!r}"), "_where": where}
        for name in ATTRIBUTES:
            if name in header:
                raw = record[name].strip()
                row[f"attr_{name.lower().replace(' ', '_')}"] = parse_number(raw, f"{where}, column {name!r}") if raw else None
        if "Artistic Categories" in header:
            row["category"] = record["Artistic Categories"].strip()
        if "Language Comment" in header:
            row["language_comment"] = record["Language Comment"].strip()
        rows.append(row)
    if unscored:
        log.warning("%s: %d painting(s) without a total score left out", path, unscored)
    for row, split in zip(rows, random_splits(len(rows), val_fraction, test_fraction, seed)):
        row["split"] = split
    return canonical_table(rows, SCALE_MAX, "apdd")
