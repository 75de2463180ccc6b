"""HAND (AesNet's multi-attribute image descriptions, ShareGPT4V-written, human-checked;
``YiPo/AesNet_HAND`` on the Hugging Face hub) into the canonical multi-text table:
``image`` (relative to ``root``), one column per attribute (empty when the image has no
description of it) and ``split``.

The release's file format is not documented anywhere we could read (docs/aesnet.md), so
the mapping is given as options (``scripts/prepare_dataset.py hand --root DIR --option
KEY=VALUE``) and three layouts are read:

- ``wide``: one record per image, one field per attribute (JSON list, JSON Lines or CSV);
  ``fields="color=colour_text,lighting=light"`` renames fields to attributes;
- ``long``: one record per (image, attribute, description): ``attribute_field``, ``text_field``;
- ``conversations``: ShareGPT4V / LLaVA records (``{"image", "conversations": [{"from":
  "human", "value": question}, {"from": "gpt", "value": answer}, ...]}``); each answer goes
  to the attribute whose keyword (``questions="depth_of_field=depth,..."``, default: the
  attribute's own words) its question contains.

Validation is named and counted in the log: images missing under ``root`` (rows dropped;
``strict=True`` makes it an error), empty descriptions, one (image, attribute) given twice
(first kept), the same text given for many images (boilerplate), unknown attributes (left
out). ``split``: a stable hash of the image name puts ``val_fraction`` of the images in
``val`` (ours: HAND publishes no split).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import SettingError
from ..errors import BadInputError
from ..json_limits import parse_json
from ..table import escapes_root
from ..text import read_text_file
from . import register_dataset

log = logging.getLogger(__name__)
# The attributes of AesNet's motivation figure (docs/aesnet.md).
HAND_ATTRIBUTES = ("content", "emotion", "composition", "depth_of_field", "lighting", "color", "technical_quality")
LAYOUTS = ("wide", "long", "conversations")
DESCRIPTION_SUFFIXES = (".json", ".jsonl", ".csv")


def parse_mapping(value: str | dict | None, what: str) -> dict[str, str]:
    """``"a=x,b=y"`` (or a dict) -> ``{"a": "x", "b": "y"}``."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = [item.partition("=") for item in str(value).split(",") if item.strip()]
    bad = [key for key, sep, target in pairs if not sep or not key.strip() or not target.strip()]
    if bad:
        raise BadInputError(f"hand: {what} wants attribute=name pairs separated by commas, got {value!r}")
    return {key.strip(): target.strip() for key, _, target in pairs}


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON list (or ``{"annotations": [...]}``-style dict of one list), JSON Lines or CSV."""
    if path.suffix == ".csv":
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise BadInputError(f"{path}: not a readable CSV ({one_line_of(error)})") from None
    text = read_text_file(path, what="descriptions file")
    if path.suffix == ".jsonl":
        records = [(number, parse_json(line, f"{path}, line {number}"))
                   for number, line in enumerate(text.splitlines(), start=1) if line.strip()]  # fmt: skip
        bad = next((number for number, record in records if not isinstance(record, dict)), None)
        if bad is not None:
            raise BadInputError(f"{path}, line {bad}: expected a JSON object (one record per line)")
        return [record for _, record in records]
    data = parse_json(text, str(path))
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise BadInputError(f"{path}: a JSON object must hold exactly one list of records")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BadInputError(f"{path}: expected a list of records")
    return data


def one_line_of(error: BaseException) -> str:
    return " ".join(str(error).split())


def _descriptions_file(root: Path, name: str | None) -> Path:
    if name and escapes_root(name):
        raise SettingError(f"hand: option descriptions={name!r} must name a file under {root} (relative, no '..')")
    if name:
        path = root / name
        if not path.is_file():
            raise BadInputError(f"hand: descriptions file {path} not found")
        return path
    found = sorted(p for p in root.iterdir() if p.suffix in DESCRIPTION_SUFFIXES and p.is_file())
    if len(found) != 1:
        raise BadInputError(f"hand: found {len(found)} description files under {root} "
                            f"({', '.join(p.name for p in found) or 'none'}); name one with --option descriptions=FILE")  # fmt: skip
    return found[0]


def _entries(records: list[dict], layout: str, options: dict, path: Path) -> list[tuple[str, str, str]]:
    """``(image, attribute name as released, text)`` for every description in the records."""
    image_field = options["image_field"]
    entries = []
    for number, record in enumerate(records):
        where = f"{path}, record {number}"
        if image_field not in record:
            raise BadInputError(f"{where} has no {image_field!r} field (fields: {sorted(record)})")
        image = str(record[image_field]).strip()
        if not image or escapes_root(image):
            raise BadInputError(f"{where}: image {image!r} is empty, absolute or climbs out of the images folder")
        if layout == "wide":
            entries += [(image, k, "" if v is None else str(v)) for k, v in record.items() if k not in options["ignore"]]
        elif layout == "long":
            if options["attribute_field"] not in record:
                raise BadInputError(f"{where} has no {options['attribute_field']!r} field (fields: {sorted(record)})")
            entries.append((image, str(record[options["attribute_field"]]),
                            str(record.get(options["text_field"]) or "")))  # fmt: skip
        else:
            for question, answer in _question_answer_pairs(record.get("conversations"), where):
                entries.append((image, _question_attribute(question, options["questions"]), answer))
    return entries


def _question_answer_pairs(turns: Any, where: str) -> list[tuple[str, str]]:
    """``(question, answer)`` of a ShareGPT4V conversation: turns alternate ``human`` then
    ``gpt``, each ``{"from", "value"}``; anything else is a one-line error naming the turn."""
    if turns is None:
        return []
    if not isinstance(turns, list):
        raise BadInputError(f"{where}: 'conversations' must be a list of turns, got {type(turns).__name__}")
    if len(turns) % 2:
        raise BadInputError(f"{where}: {len(turns)} conversation turns, an odd number: the last question has no answer")
    pairs = []
    for index, turn in enumerate(turns):
        expected = "human" if index % 2 == 0 else "gpt"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadInputError(f"{where}, turn {index}: expected {{'from': {expected!r}, 'value': text}}, got {str(turn)[:80]!r}")
        if turn.get("from") != expected:
            raise BadInputError(f"{where}, turn {index}: from {turn.get('from')!r}, expected {expected!r} "
                                "(turns alternate human question, gpt answer)")  # fmt: skip
        if index % 2:
            pairs.append((turns[index - 1]["value"], turn["value"]))
    return pairs


def _question_attribute(question: str, keywords: dict[str, str]) -> str:
    lowered = question.lower()
    matches = [a for a, word in keywords.items() if word.lower() in lowered]
    return matches[0] if len(matches) == 1 else f"<question: {question.strip()[:60]}>"


@register_dataset("hand")
def convert(root: Path, layout: str = "wide", descriptions: str | None = None, images: str = "images",
            fields: str | dict | None = None, questions: str | dict | None = None,
            attributes: str | None = None, val_fraction: float = 0.05, strict: bool = False,
            image_field: str = "image", attribute_field: str = "attribute", text_field: str = "description",
            ignore: str = "id,split") -> pd.DataFrame:  # fmt: skip
    """The HAND release under ``root`` as ``image, <attribute columns>, split`` (see the module doc)."""
    root = Path(root)
    if escapes_root(images):
        raise SettingError(f"hand: option images={images!r} must name a folder under {root} (relative, no '..')")
    if layout not in LAYOUTS:
        raise SettingError(f"hand: layout must be one of {LAYOUTS}, got {layout!r}")
    if not 0.0 <= val_fraction <= 1.0:
        raise SettingError(f"hand: val_fraction must be between 0 and 1, got {val_fraction!r}")
    known = tuple(a.strip() for a in attributes.split(",")) if attributes else HAND_ATTRIBUTES
    renames = parse_mapping(fields, "fields")  # attribute -> released field name
    by_field = {field: attribute for attribute, field in renames.items()}
    options = {"image_field": image_field, "attribute_field": attribute_field, "text_field": text_field,
               "ignore": {image_field, *ignore.split(",")},
               "questions": parse_mapping(questions, "questions") or {a: a.replace("_", " ") for a in known}}  # fmt: skip
    path = _descriptions_file(root, descriptions)
    entries = _entries(read_records(path), layout, options, path)

    table: dict[str, dict[str, str]] = {}
    unknown, empty, repeated = Counter(), Counter(), Counter()
    for image, released, text in entries:
        attribute = by_field.get(released, released)
        if attribute not in known:
            unknown[released] += 1
            continue
        row = table.setdefault(image, {})
        text = " ".join(text.split())
        if not text:
            empty[attribute] += 1
            continue
        if row.get(attribute):
            repeated[attribute] += 1  # the same (image, attribute) twice: the first stays
            continue
        row[attribute] = text
    if not table:
        raise BadInputError(f"hand: no description of any attribute {known} in {path}")

    image_dir = root / images
    inside = image_dir.resolve()
    for name in table:  # a symlink inside the folder may still lead out of it
        resolved = (image_dir / name).resolve()
        if resolved != inside and inside not in resolved.parents:
            raise BadInputError(f"hand: image {name!r} ({path}) resolves to {resolved}, outside {image_dir}")
    missing = [name for name in table if not (image_dir / name).is_file()]
    absent = set(missing)
    if missing:
        message = f"hand: {len(missing)} of {len(table)} images missing under {image_dir}, e.g. {missing[:3]}"
        if strict or len(missing) == len(table):  # nothing left to write: a header-only table helps no one
            raise BadInputError(message)
        log.warning("%s; their rows are dropped", message)
    rows = [{"image": f"{images}/{name}" if images else name, **{a: row.get(a, "") for a in known},
             "split": _split(name, val_fraction)} for name, row in table.items() if name not in absent]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["image", *known, "split"])
    _report(frame, known, unknown, empty, repeated)
    frame.attrs["dataset"] = "hand"
    frame.attrs["report"] = {"missing_images": len(missing), "unknown": dict(unknown), "empty": dict(empty),
                             "repeated": dict(repeated), "boilerplate": _boilerplate(frame, known)}  # fmt: skip
    return frame


def _split(name: str, val_fraction: float) -> str:
    bucket = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def _boilerplate(frame: pd.DataFrame, attributes: tuple[str, ...]) -> dict[str, int]:
    """Per attribute, how many rows share their text with another image."""
    counts = {}
    for a in attributes:
        texts = frame[a][frame[a] != ""]
        counts[a] = int(texts.duplicated(keep=False).sum())
    return {a: n for a, n in counts.items() if n}


def _report(frame: pd.DataFrame, attributes, unknown: Counter, empty: Counter, repeated: Counter) -> None:
    log.info("hand: %d images; descriptions per attribute: %s", len(frame),
             ", ".join(f"{a} {int((frame[a] != '').sum())}" for a in attributes))  # fmt: skip
    if unknown:
        log.warning("hand: %d descriptions of unknown attributes left out: %s (map them with --option fields=...)",
                    sum(unknown.values()), dict(unknown.most_common(10)))  # fmt: skip
    if empty:
        log.warning("hand: %d empty descriptions (cells left empty): %s", sum(empty.values()), dict(empty))
    if repeated:
        log.warning("hand: %d (image, attribute) pairs given more than once, first kept: %s", sum(repeated.values()), dict(repeated))
    boilerplate = _boilerplate(frame, attributes)
    if boilerplate:
        log.warning("hand: descriptions shared by several images (boilerplate?) per attribute: %s", boilerplate)
