"""BAID (Yi et al., CVPR 2023): ``{train,val,test}_set.csv`` (``image,score``, 0-10) and ``images/``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import SPLITS, canonical_table, find_dir, parse_number, read_csv_rows, require_columns
from ..errors import BadInputError

SCALE_MAX = 10.0


@register_dataset("baid")
def convert(root: Path) -> pd.DataFrame:
    """The three released label files, with their split; images under ``images/``.

    The test labels were released after the CGI-AIAA 2023 challenge; a copy without
    ``test_set.csv`` converts train and val only.
    """
    root = Path(root)
    images = find_dir(root, ("images",), "images")
    rows = []
    for split in SPLITS:
        path = root / f"{split}_set.csv"
        if not path.is_file():
            if split == "test":
                continue
            raise BadInputError(f"BAID {split} labels not found: {path}")
        header, records = read_csv_rows(path)
        require_columns(path, header, ("image", "score"))
        for line, record in records:
            score = parse_number(record["score"], f"{path}, line {line}, column 'score'")
            rows.append({"image": f"{images}/{record['image'].strip()}", "score": score, "split": split,
                         "_where": f"{path}, line {line}"})  # fmt: skip
    return canonical_table(rows, SCALE_MAX, "baid")
