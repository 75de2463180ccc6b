"""Any number of named texts per table row (``texts: {name: str}``) and an optional score
distribution beside the mean.

A system reads the texts it names (``Scorer.text_names``): MTPG-AIAA one ``description``,
CG-IAA four critiques (``color``, ``composition``, ...), AesNet seven attribute descriptions.
Each text comes from

- a column of the score CSV: ``{"color": "color_critique"}`` (or ``{"color": {"column": ...}}``);
- a CSV joined on ``image``: ``{"color": {"file": "critiques.csv", "column": "color"}}``;
- a JSON file joined on ``image``: ``{"color": {"file": "critiques.json"}}`` holding
  ``{image: text}``, ``{image: {name: text}}`` or ``[{"image": ..., name: text}, ...]``
  (``column`` picks the key, default the text's name).

The texts land in table columns of the same name and ``table.attrs["text_names"]``.
A distribution is read from the score CSV's ``dist_1..dist_K`` columns (vote counts or
probabilities; the catalogue writes AVA's ten counts so) into the same columns and
``table.attrs["distribution_columns"]``.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import BadInputError
from .table import _read_csv, read_score_table

RESERVED_COLUMNS = ("image", "score", "target", "split", "score_0_10")
DISTRIBUTION_PATTERN = re.compile(r"^dist_(\d+)$")


def read_table(
    csv_path: str | os.PathLike,
    texts: Mapping[str, Any] | None = None,
    distribution: bool = True,
    max_text_chars: int = 20000,
    **options: Any,
) -> pd.DataFrame:
    """``read_score_table(csv_path, **options)`` plus named texts and the distribution.

    Args:
        texts: ``{name: source}`` as in the module docstring; ``None`` for none beyond
            the ``description``.
        distribution: read ``dist_1..dist_K`` columns when the CSV has them.
    Returns:
        The score table with one column per text name, ``dist_*`` columns when present,
        ``attrs["text_names"]`` (always includes ``description`` when the table has
        descriptions) and ``attrs["distribution_columns"]`` (maybe empty).
    """
    table = read_score_table(csv_path, **options)
    attach_texts(table, texts or {}, max_text_chars)
    if distribution:
        attach_distribution(table)
    else:
        table.attrs["distribution_columns"] = []
    return table


def attach_texts(table: pd.DataFrame, texts: Mapping[str, Any], max_chars: int = 20000) -> pd.DataFrame:
    """Add one column per named text to ``table`` (in place; see the module docstring)."""
    source = Path(table.attrs.get("source", ""))
    names = ["description"] if table.attrs.get("has_descriptions", False) else []
    images = table["image"].tolist()
    for name, spec in texts.items():
        if name in RESERVED_COLUMNS or DISTRIBUTION_PATTERN.match(name):
            raise BadInputError(f"text name {name!r} is reserved for a table column; choose another name")
        spec = {"column": spec} if isinstance(spec, str) else dict(spec or {})
        if spec.get("file"):
            values = _texts_from_file(Path(spec["file"]), spec.get("column") or name, images, name)
        else:
            values = _texts_from_column(source, spec.get("column") or name, images, name)
        for image, text in zip(images, values):
            if len(text) > max_chars:
                raise BadInputError(f"text {name!r} of image {image!r} has {len(text):,} characters, "
                                    f"more than {max_chars:,}")  # fmt: skip
        table[name] = pd.Series(values, dtype=str, index=table.index)
        if name not in names:
            names.append(name)
    table.attrs["text_names"] = names
    return table


def attach_distribution(table: pd.DataFrame) -> pd.DataFrame:
    """Copy the score CSV's ``dist_1..dist_K`` columns (non-negative numbers, some positive) into ``table``."""
    source = Path(table.attrs.get("source", ""))
    file = _read_csv(source)
    numbered = sorted((int(m.group(1)), name) for name in file.header if (m := DISTRIBUTION_PATTERN.match(name)))
    columns = [name for _, name in numbered]
    if columns and [k for k, _ in numbered] != list(range(1, len(columns) + 1)):
        raise BadInputError(f"{source}: distribution columns must be dist_1..dist_K without gaps, found {columns}")
    values = np.zeros((len(file.rows), len(columns)))
    for row, (line, fields) in enumerate(file.rows):
        for k, name in enumerate(columns):
            raw = fields[file.column(name)].strip()
            try:
                value = float(raw)
            except ValueError:
                raise BadInputError(f"{source}, line {line}, column {name!r}: {raw!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise BadInputError(f"{source}, line {line}, column {name!r}: {raw!r} is not a count >= 0")
            values[row, k] = value
        if columns and values[row].sum() <= 0:
            raise BadInputError(f"{source}, line {line}: the distribution {columns[0]}..{columns[-1]} is all zero")
    for k, name in enumerate(columns):
        table[name] = values[:, k]
    table.attrs["distribution_columns"] = columns
    return table


def read_text_file(path: str | os.PathLike, column: str) -> dict[str, str]:
    """``{image: text}`` from a CSV (``image`` and ``column``) or JSON file (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"text file {path} does not exist")
    head = path.read_text(encoding="utf-8-sig")[:4096].lstrip()[:1]
    found = _json_texts(path, column) if head in ("{", "[") else _csv_texts(path, column)
    return {image: _checked(text, path, where, image, column) for image, (where, text) in found.items()}


# -- sources ----------------------------------------------------------------------------
def _texts_from_column(source: Path, column: str, images: list[str], name: str) -> list[str]:
    file = _read_csv(source)
    if column not in file.header:
        raise BadInputError(f"{source}: text {name!r} wants column {column!r}; columns found: {file.header}")
    index = file.column(column)
    return [_checked(fields[index], source, f"line {line}", image, name)
            for (line, fields), image in zip(file.rows, images)]  # fmt: skip


def _texts_from_file(path: Path, column: str, images: list[str], name: str) -> list[str]:
    if not path.is_file():
        raise BadInputError(f"text {name!r}: file {path} does not exist")
    head = path.read_text(encoding="utf-8-sig")[:4096].lstrip()[:1]
    by_image = _json_texts(path, column) if head in ("{", "[") else _csv_texts(path, column)
    missing = [image for image in images if image not in by_image]
    if missing:
        raise BadInputError(f"image {missing[0]!r} has no {name!r} text in {path}; "
                            f"{len(missing)} of {len(images)} images are missing")  # fmt: skip
    return [_checked(by_image[image][1], path, by_image[image][0], image, name) for image in images]


def _csv_texts(path: Path, column: str) -> dict[str, tuple[str, str]]:
    file = _read_csv(path)
    file.require("image", column)
    image_at, text_at = file.column("image"), file.column(column)
    found: dict[str, tuple[str, str]] = {}
    for line, fields in file.rows:
        image = fields[image_at].strip()
        if image in found:
            raise BadInputError(f"{path}: image {image!r} appears twice ({found[image][0]} and line {line})")
        found[image] = (f"line {line}", fields[text_at])
    return found


def _json_texts(path: Path, column: str) -> dict[str, tuple[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise BadInputError(f"Cannot parse JSON file {path}: {error}") from None
    found: dict[str, tuple[str, str]] = {}
    if isinstance(data, dict):
        for image, value in data.items():
            text = value.get(column) if isinstance(value, dict) else value
            found[str(image)] = (f"key {image!r}", text)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "image" not in item:
                raise BadInputError(f"{path}, item {i}: expected an object with an 'image' key")
            if str(item["image"]) in found:
                raise BadInputError(f"{path}: image {item['image']!r} appears twice (item {i})")
            found[str(item["image"])] = (f"item {i}", item.get(column))
    else:
        raise BadInputError(f"{path}: expected a JSON object or list, found {type(data).__name__}")
    return found


def _checked(text: Any, path: Path, where: str, image: str, name: str) -> str:
    if not isinstance(text, str) or not text.strip() or text.strip().lower() == "nan":
        raise BadInputError(f"{path}, {where}: empty or missing {name!r} text for image {image!r}")
    return text
