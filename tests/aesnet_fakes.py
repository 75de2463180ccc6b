"""A few-row multi-text table with tiny images, for AesNet's tests (no downloads)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ATTRIBUTES = ("content", "color", "lighting")
WORDS = ("red", "blue", "soft", "harsh", "calm", "busy", "warm", "cool", "bright", "dark")


def write_multitext_table(root: Path, rows: int = 12, seed: int = 0, size: int = 32) -> dict:
    """``root/images/*.png`` and ``root/table.csv`` (image, split, score, dist_1..dist_10,
    one column per attribute, some cells empty)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(rows):
        name = f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / name)
        record = {"image": name, "split": "train" if i < rows * 2 // 3 else "val", "score": float(rng.uniform(1, 9))}
        votes = rng.integers(0, 20, 10)
        votes[rng.integers(10)] += 1  # never all zero
        record |= {f"dist_{k + 1}": int(v) for k, v in enumerate(votes)}
        for j, attribute in enumerate(ATTRIBUTES):
            missing = (i + j) % 4 == 3
            record[attribute] = "" if missing else f"the {attribute} is {' '.join(rng.choice(WORDS, 3))} {i}"
        records.append(record)
    pd.DataFrame(records).to_csv(root / "table.csv", index=False)
    return {"table": str(root / "table.csv"), "image_root": str(root / "images")}
