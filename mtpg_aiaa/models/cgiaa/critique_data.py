"""CG-IAA's text files: the released critique database (one JSON per attribute) and our
critique cache (one CSV row of four critiques per image).

Released JSON: a list of ``{"id": 0, "img_id": "773931", "caption": "..."}`` (AVA ids).
Cache CSV: columns ``image,color,composition,dof,general``; written once per image by the
frozen generator, read by ``cgiaa/score`` training and by ``test.py``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mtpg_aiaa.data import BadInputError
from mtpg_aiaa.fileio import atomic_write

from .generator import ATTRIBUTES

CRITIQUE_COLUMNS = ("image", *ATTRIBUTES)


def add_period(caption: str) -> str:
    """The release's caption clean-up before tokenising: strip, end with ".", and join a
    final " ." to the word before it."""
    caption = caption.strip()
    if not caption.endswith("."):
        return caption + "."
    if len(caption) > 1 and caption[-2] == " ":
        return caption[:-2] + "."
    return caption


def read_critique_json(path: str | Path) -> pd.DataFrame:
    """``id, img_id, caption`` rows of one released attribute file; bad rows are named."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BadInputError(f"{path}: cannot read critique JSON: {error}") from None
    if not isinstance(rows, list):
        raise BadInputError(f"{path}: expected a JSON list of {{id, img_id, caption}} objects")
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not {"img_id", "caption"} <= set(row):
            raise BadInputError(f"{path}: entry {index} lacks 'img_id' or 'caption': {str(row)[:80]}")
        if not isinstance(row["caption"], str) or not row["caption"].strip():
            raise BadInputError(f"{path}: entry {index} (img_id {row['img_id']}) has an empty caption")
    table = pd.DataFrame(rows)
    table["img_id"] = table["img_id"].astype(str)
    return table


def read_critique_csv(path: str | Path, attributes: Sequence[str] = ATTRIBUTES) -> pd.DataFrame:
    """The critique cache, one row per image; a missing column, an empty image name or a repeated
    image is named. Critiques may be empty: a generator can stop at once."""
    path = Path(path)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", *attributes) if c not in table.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}")
    empty = table.index[table["image"].str.strip() == ""]
    if len(empty):
        raise BadInputError(f"{path}: line {int(empty[0]) + 2}: empty 'image'")
    duplicated = table["image"].duplicated()
    if duplicated.any():
        raise BadInputError(f"{path}: line {int(duplicated.idxmax()) + 2}: image {table['image'][duplicated.idxmax()]!r} repeated")
    return table


def write_critique_csv(rows: Sequence[dict[str, str]], path: str | Path) -> Path:
    """Write ``rows`` (``{"image", attribute...}``) as the cache CSV, atomically."""
    table = pd.DataFrame(list(rows), columns=list(CRITIQUE_COLUMNS))
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
