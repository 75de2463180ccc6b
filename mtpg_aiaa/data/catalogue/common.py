"""What every converter shares: the canonical table, file look-ups and one-line errors."""
from __future__ import annotations

import csv
import logging
import posixpath
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import BadInputError

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


def canonical_table(rows: Sequence[dict[str, Any]], scale_max: float, name: str) -> pd.DataFrame:
    """``rows`` (``image``, ``score``, ``split``, optional ``dist_*``, ``attr_*`` and text
    columns) as the catalogue's table: ``image, score, score_0_10, [dist_1..K], split, ...``.

    ``score_0_10`` is ``score * 10 / scale_max``: a ratio, so AVA's 1-10 means keep their
    values and 5 stays the usual binary threshold on every set (docs/data.md).
    """
    if not rows:
        raise BadInputError(f"{name}: no labelled image found")
    rows = drop_duplicate_images(rows, name)
    table = pd.DataFrame(list(rows))
    outside = table[(table["score"] < 0) | (table["score"] > scale_max)]
    if len(outside):
        raise BadInputError(f"{name}: image {outside['image'].iloc[0]!r} has score {outside['score'].iloc[0]}, "
                            f"outside 0-{scale_max:g} ({len(outside)} such rows)")  # fmt: skip
    table["score_0_10"] = table["score"].astype(float) * 10.0 / scale_max
    dist = sorted((c for c in table.columns if c.startswith("dist_")), key=lambda c: int(c.split("_")[1]))
    first = ["image", "score", "score_0_10", *dist, "split"]
    rest = [c for c in table.columns if c not in first]
    table = table[first + rest]
    table.attrs["dataset"] = name
    table.attrs["scale_max"] = scale_max
    return table


def drop_duplicate_images(rows: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """``rows`` with each image once. A row's ``_where`` (file and line, removed here) names it.

    An image listed again with the same labels and split is dropped with a log line (a
    repeated line in a release); listed again with other labels it is a one-line error
    naming both rows, since either choice would silently change the benchmark.
    """
    first: dict[str, dict[str, Any]] = {}
    kept, repeated = [], []
    for number, row in enumerate(rows):
        row = dict(row)
        where = row.pop("_where", f"row {number}")
        image = posixpath.normpath(str(row["image"]))
        if image not in first:
            first[image] = {**row, "_where": where}
            kept.append(row)
            continue
        earlier = first[image]
        if {k: v for k, v in earlier.items() if k != "_where"} != row:
            raise BadInputError(f"{name}: image {row['image']!r} is listed twice with different labels or splits: "
                                f"{earlier['_where']} and {where}")  # fmt: skip
        repeated.append(f"{row['image']} ({earlier['_where']}; {where})")
    if repeated:
        log.warning("%s: %d image(s) listed twice with the same labels, kept once: %s", name, len(repeated),
                    "; ".join(repeated[:3]) + (" ..." if len(repeated) > 3 else ""))  # fmt: skip
    return kept


def find_file(root: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists, or a one-line error."""
    candidates = list(candidates)
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise BadInputError(f"{what} not found under {root}: looked for {', '.join(candidates)}")


def find_dir(root: Path, candidates: Iterable[str], default: str) -> str:
    """The first of ``candidates`` that is a folder under ``root`` (as a relative path), else ``default``."""
    return next((c for c in candidates if (root / c).is_dir()), default)


def parse_number(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BadInputError(f"{where}: {raw!r} is not a number") from None
    if value != value:  # NaN
        raise BadInputError(f"{where}: empty score")
    return value


def read_csv_rows(path: Path, encodings: Sequence[str] = ("utf-8-sig",)) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV's header and ``(line, {column: cell})`` rows; the first encoding that decodes wins."""
    for encoding in encodings:
        try:
            with path.open(newline="", encoding=encoding) as handle:
                reader = csv.DictReader(handle)
                rows = [(reader.line_num, row) for row in reader]
                return [name.strip() for name in reader.fieldnames or []], [
                    (line, {(k or "").strip(): (v or "") for k, v in row.items()}) for line, row in rows]
        except UnicodeDecodeError:
            continue
    raise BadInputError(f"{path}: not readable as {' or '.join(encodings)} text")


def require_columns(path: Path, header: Sequence[str], names: Sequence[str]) -> None:
    missing = [name for name in names if name not in header]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing}; columns found: {list(header)}")


def random_splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A seeded split for a set that releases none (ours; docs/data.md): ``n`` labels."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    labels = ["train"] * n
    for rank, row in enumerate(order):
        labels[row] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return labels
