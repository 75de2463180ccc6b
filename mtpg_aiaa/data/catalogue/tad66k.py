"""TAD66K (He et al., IJCAI 2022): ``labels/merge/{train,test}.csv`` (``image,score``, 1-10
means) and ``imgs/``. The release has no validation split."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import canonical_table, find_dir, find_file, parse_number, read_csv_rows, require_columns

SCALE_MAX = 10.0


@register_dataset("tad66k")
def convert(root: Path) -> pd.DataFrame:
    root = Path(root)
    images = find_dir(root, ("imgs", "images"), "imgs")
    rows = []
    for split in ("train", "test"):
        path = find_file(root, (f"labels/merge/{split}.csv", f"merge/{split}.csv"), f"TAD66K {split} labels")
        header, records = read_csv_rows(path)
        require_columns(path, header, ("image", "score"))
        for line, record in records:
            score = parse_number(record["score"], f"{path}, line {line}, column 'score'")
            rows.append({"image": f"{images}/{record['image'].strip()}", "score": score, "split": split,
                         "_where": f"{path}, line {line}"})  # fmt: skip
    return canonical_table(rows, SCALE_MAX, "tad66k")
