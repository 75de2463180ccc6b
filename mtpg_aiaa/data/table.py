"""Read a label CSV (``image,score[,comment]``) into a checked table.

We parse with the ``csv`` module rather than ``pandas.read_csv`` so that every
error can name the real 1-based line of the file (descriptions may contain
quoted newlines, which shift pandas' row numbers), and so that rows with too
many fields are errors instead of being silently turned into an index.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Optional

import numpy as np
import pandas as pd

from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.text import read_text_file

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("image", "score", "target", "description")


@dataclass
class _CsvFile:
    """Raw cells of a CSV file, each data row with the line it starts on."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def column(self, name: str) -> int:
        return self.header.index(name)

    def require(self, *names: str) -> None:
        missing = [name for name in names if name not in self.header]
        if missing:
            raise BadInputError(
                f"{self.path}: missing required column(s) {missing}; columns found: {self.header}"
            )


def read_score_table(
    csv_path: str | os.PathLike,
    descriptions_csv: Optional[str | os.PathLike] = None,
    score_scale: float = 10.0,
    description_column: str = "comment",
    max_description_chars: int = 20000,
    allow_paths_outside_root: bool = False,
) -> pd.DataFrame:
    """Read and validate a score CSV, joining descriptions when there are any.

    Args:
        csv_path: CSV with columns ``image`` and ``score`` (others are ignored,
            except ``description_column`` when present).
        descriptions_csv: optional CSV with ``image`` and ``description_column``
            (extra columns such as ``score`` are ignored), used only when the score
            CSV has no description column; left-joined on ``image``.
        score_scale: the largest possible score; ``target = score / score_scale``.
        description_column: name of the description column in either file.
        max_description_chars: longer descriptions are rejected (they would only
            reach the tokenizer to be truncated, and usually mean a broken file).
        allow_paths_outside_root: accept image paths that are absolute or climb out
            with ``..`` (by default refused: a CSV from elsewhere must not make us read
            arbitrary files; ``data.allow_paths_outside_root=true`` opts in).

    Returns:
        DataFrame with one row per CSV row, in file order, and columns ``image``
        (str), ``score`` (float64, as in the file), ``target`` (float64 on [0, 1])
        and ``description`` (str, ``""`` when there are no descriptions).
        ``attrs["has_descriptions"]`` says whether descriptions were found and
        ``attrs["source"]`` is the score CSV path.

    Raises:
        BadInputError: any problem in either file; the message names the file,
            the line and the offending column or value.
    """
    if not (math.isfinite(score_scale) and score_scale > 0):
        raise ValueError(f"score_scale must be a positive number, got {score_scale}")
    scores_file = _read_csv(Path(csv_path), max_description_chars)
    scores_file.require("image", "score")
    images, scores = _parse_images_and_scores(scores_file, score_scale, allow_paths_outside_root)

    if description_column in scores_file.header:
        if descriptions_csv is not None:
            logger.warning(
                "%s already has a %r column; ignoring descriptions_csv=%s",
                scores_file.path, description_column, descriptions_csv,
            )
        column = scores_file.column(description_column)
        descriptions = [
            _checked_description(fields[column], scores_file.path, line, image, max_description_chars)
            for (line, fields), image in zip(scores_file.rows, images)
        ]
    elif descriptions_csv is not None:
        descriptions = _join_descriptions(
            scores_file, images, Path(descriptions_csv), description_column, max_description_chars
        )
    else:
        descriptions = None

    score_values = np.asarray(scores, dtype=np.float64)
    table = pd.DataFrame(
        {
            "image": pd.Series(images, dtype=str),
            "score": score_values,
            "target": score_values / score_scale,
            "description": pd.Series(
                descriptions if descriptions is not None else [""] * len(images), dtype=str
            ),
        }
    )
    table.attrs["has_descriptions"] = descriptions is not None
    table.attrs["source"] = str(scores_file.path)
    # read by the datasets, which join the names to the image root (``image_path``)
    table.attrs["allow_paths_outside_root"] = bool(allow_paths_outside_root)
    return table


def _read_csv(path: Path, max_field_chars: int = 0) -> _CsvFile:
    if not path.is_file():
        raise BadInputError(f"CSV file {path} does not exist")
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    line_before = 0
    # Decoded whole first, so a non-UTF-8 byte is reported on its own line (a streaming
    # decoder fails a buffer ahead of the csv reader). utf-8-sig: spreadsheet exports
    # often start with a byte-order mark.
    text = read_text_file(path, what="CSV file")
    # The csv module's own field limit (128 KiB) must not pre-empt max_description_chars,
    # which gives the real reason; the whole file is in memory already.
    field_limit = csv.field_size_limit()
    csv.field_size_limit(max(field_limit, max_field_chars + 1, len(text) + 1))
    try:
        with io.StringIO(text, newline="") as handle:
            reader = csv.reader(handle, strict=True)
            for fields in reader:
                start_line, line_before = line_before + 1, reader.line_num
                if not fields:  # blank line, skipped like pandas does
                    continue
                if header is None:
                    header = [name.strip() for name in fields]
                    continue
                if len(fields) != len(header):
                    raise BadInputError(
                        f"Cannot parse CSV file {path}, line {start_line}: expected "
                        f"{len(header)} fields as in the header, found {len(fields)}"
                    )
                rows.append((start_line, fields))
    except csv.Error as error:
        raise BadInputError(
            f"Cannot parse CSV file {path}, near line {line_before + 1}: {error}"
        ) from error
    finally:
        csv.field_size_limit(field_limit)
    if header is None:
        raise BadInputError(f"CSV file {path} is empty (no header line)")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise BadInputError(f"CSV file {path}, line 1: duplicated column name(s) {duplicated}")
    if not rows:
        raise BadInputError(f"CSV file {path} has a header but no data rows")
    return _CsvFile(path, header, rows)


def _parse_images_and_scores(
    file: _CsvFile, score_scale: float, allow_paths_outside_root: bool = False
) -> tuple[list[str], list[float]]:
    image_column, score_column = file.column("image"), file.column("score")
    images: list[str] = []
    scores: list[float] = []
    first_line_of: dict[str, tuple[int, str]] = {}
    for line, fields in file.rows:
        # Stripped because hand-written CSVs often have ", " separators.
        image, raw_score = fields[image_column].strip(), fields[score_column].strip()
        where = f"{file.path}, line {line}"
        if not image:
            raise BadInputError(f"{where}: empty value in column 'image'")
        if not allow_paths_outside_root and escapes_root(image):
            raise BadInputError(
                f"{where}, column 'image': {image!r} points outside the image root (absolute or "
                "'..'); set data.allow_paths_outside_root=true if the CSV is yours and this is intended"
            )
        try:
            score = float(raw_score)
        except ValueError:
            raise BadInputError(
                f"{where}, column 'score': {raw_score!r} is not a number (image {image!r})"
            ) from None
        if not math.isfinite(score):
            raise BadInputError(f"{where}, column 'score': {raw_score!r} is not a finite number")
        if not 0.0 <= score <= score_scale:
            raise BadInputError(
                f"{where}, column 'score': {raw_score} is outside [0, {score_scale:g}] "
                f"(image {image!r}); set score_scale to the largest possible score"
            )
        # ./0000.jpg and 0000.jpg (or a/../0000.jpg) are one file: scored twice it would count twice
        previous_line, previous_name = first_line_of.setdefault(same_file_key(image), (line, image))
        if previous_line != line:
            spelled = "" if previous_name == image else f" (as {previous_name!r} on line {previous_line})"
            raise BadInputError(
                f"{file.path}: image {image!r} appears twice, on lines {previous_line} and {line}{spelled}"
            )
        images.append(image)
        scores.append(score)
    return images, scores


def image_path(root: Path, image: str, allow_paths_outside_root: bool = False, resolved_root: Path | None = None) -> Path:
    """``root / image``, refused (``BadInputError``) when it leads outside ``root`` after
    symlinks: a link inside the image folder must not read another place unless the user
    set ``data.allow_paths_outside_root=true``. ``resolved_root``: ``root.resolve()``, when
    the caller has it already (one ``resolve`` per table, not per image)."""
    path = root / image
    if allow_paths_outside_root:
        return path
    inside = resolved_root or root.resolve()
    target = path.resolve()
    if target != inside and inside not in target.parents:
        raise BadInputError(
            f"Image {path} resolves to {target}, outside the image root {root} (a symlink or '..'); "
            "set data.allow_paths_outside_root=true if this is intended"
        )
    return path


def same_file_key(image: str) -> str:
    """One spelling per file name: separators as ``/``, ``.`` and ``x/..`` folded."""
    return posixpath.normpath(image.replace("\\", "/"))


def escapes_root(image: str) -> bool:
    """Whether a CSV image path leaves the folder it is joined to: absolute (POSIX or
    Windows style) or climbing above it with ``..``."""
    if image.startswith(("/", "\\")) or PureWindowsPath(image).drive or PurePosixPath(image).is_absolute():
        return True
    depth = 0
    for part in image.replace("\\", "/").split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _join_descriptions(
    scores_file: _CsvFile,
    images: list[str],
    descriptions_path: Path,
    description_column: str,
    max_chars: int,
) -> list[str]:
    descriptions_file = _read_csv(descriptions_path, max_chars)
    descriptions_file.require("image", description_column)
    image_column = descriptions_file.column("image")
    text_column = descriptions_file.column(description_column)
    line_and_text: dict[str, tuple[int, str]] = {}
    for line, fields in descriptions_file.rows:
        image = fields[image_column].strip()
        if image in line_and_text:
            raise BadInputError(
                f"{descriptions_path}: image {image!r} has two descriptions, on lines "
                f"{line_and_text[image][0]} and {line}"
            )
        line_and_text[image] = (line, fields[text_column])

    missing = [(line, image) for (line, _), image in zip(scores_file.rows, images)
               if image not in line_and_text]
    if missing:
        line, image = missing[0]
        raise BadInputError(
            f"Image {image!r} (line {line} of {scores_file.path}) has no description in "
            f"{descriptions_path}; {len(missing)} of {len(images)} images are missing"
        )
    return [
        _checked_description(line_and_text[image][1], descriptions_path,
                             line_and_text[image][0], image, max_chars)
        for image in images
    ]


def _checked_description(text: str, path: Path, line: int, image: str, max_chars: int) -> str:
    where = f"{path}, line {line}"
    if not text.strip() or text.strip().lower() == "nan":
        raise BadInputError(f"{where}: empty description for image {image!r}")
    if len(text) > max_chars:
        raise BadInputError(
            f"{where}: description of image {image!r} has {len(text):,} characters, "
            f"more than max_description_chars={max_chars:,}"
        )
    return text
