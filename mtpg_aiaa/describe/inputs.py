"""The list of images to describe: the rows of a label CSV, or the image files of a folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.table import read_score_table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# read_score_table joins or checks a description column when it finds one; the input's
# own comments (possibly empty) are irrelevant here, so point it at a column no file has.
_IGNORE_DESCRIPTIONS = "\x00describe-ignores-descriptions"


@dataclass(frozen=True)
class DescribeItem:
    """One image: ``image`` as written in the output's ``image`` column, ``path`` to open,
    ``score`` as written in the output (``""`` when the input has none)."""

    image: str
    path: Path
    score: str
    row: int  # 0-based position in the input, for error messages


def items_from_table(
    csv_path: str | os.PathLike, image_root: str | os.PathLike, score_scale: float = 10.0
) -> list[DescribeItem]:
    """Rows of a label CSV (``image,score[,...]``), checked by :func:`read_score_table`."""
    table = read_score_table(csv_path, score_scale=score_scale, description_column=_IGNORE_DESCRIPTIONS)
    root = Path(image_root)
    return [
        DescribeItem(image=name, path=root / name, score=repr(float(score)), row=row)
        for row, (name, score) in enumerate(zip(table["image"], table["score"]))
    ]


def items_from_folder(folder: str | os.PathLike) -> list[DescribeItem]:
    """Image files directly in ``folder`` (by suffix), sorted by name; no scores."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"image folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"image folder {folder} has no image files ({', '.join(IMAGE_SUFFIXES)})")
    return [DescribeItem(image=p.name, path=p, score="", row=row) for row, p in enumerate(files)]
