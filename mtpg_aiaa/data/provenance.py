"""What a model was trained on, and the check ``test.py`` makes with it before scoring.

``train.py`` records the training table of its data config (``data.train_csv``) as one entry:

- ``table``: the CSV's path as configured; ``images``: how many distinct images it lists;
- ``names_sha256``: SHA-256 of its sorted, distinct image names joined by newlines (one
  fingerprint of the table, comparable across machines);
- ``name_hashes``: base64 of each distinct name's 8-byte BLAKE2b digest, sorted, so that a
  test table's overlap with the training images can be counted from the weights file
  alone (a false match needs a 64-bit collision);
- ``toy``: for the toy set (``data=toy``) the build's ``seed``, ``split_seed``,
  ``num_images`` and ``image_size``: the toy set re-splits the same pictures by
  ``split_seed``, and its file names do not change with it.

A model started from other weights (``init_from``) inherits their entries, so a stage-2
model also records what its stage-1 backbone was trained on. The entries travel as JSON in
the ``training_data`` metadata of our ``.safetensors`` files and as ``training_data`` in a
training checkpoint (``last.pt``).
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import BadInputError

log = logging.getLogger(__name__)
OVERRIDE = "eval.allow_train_overlap=true"
_DIGEST_BYTES = 8
_TOY_PICTURE_KEYS = ("seed", "num_images", "image_size")  # which pictures; split_seed: which split


def _digest(name: str) -> bytes:
    return hashlib.blake2b(name.encode("utf-8"), digest_size=_DIGEST_BYTES).digest()


def table_image_names(path: str | Path) -> list[str]:
    """The ``image`` column of a CSV (stripped, as the table readers strip it)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = [name.strip() for name in next(rows, [])]
        if "image" not in header:
            raise BadInputError(f"{path} has no 'image' column")
        at = header.index("image")
        return [row[at].strip() for row in rows if len(row) > at]


def toy_build(data_cfg: Any) -> dict[str, int] | None:
    """``{seed, split_seed, num_images, image_size}`` of a toy data config (``data=toy``), else None."""
    build = data_cfg.get("build") if hasattr(data_cfg, "get") else None
    if not build:
        return None
    seed = int(build.get("seed", 0))
    split_seed = build.get("split_seed")
    return {"seed": seed, "split_seed": seed if split_seed is None else int(split_seed),
            "num_images": int(build.get("num_images", 6000)), "image_size": int(build.get("image_size", 96))}


def training_entry(data_cfg: Any) -> dict[str, Any] | None:
    """The record of ``data_cfg``'s training table (module doc), or None when it names none."""
    csv_path = data_cfg.get("train_csv") if hasattr(data_cfg, "get") else None
    if not csv_path or not Path(csv_path).is_file():
        return None
    names = sorted(set(table_image_names(csv_path)))
    entry: dict[str, Any] = {
        "table": str(csv_path),
        "images": len(names),
        "names_sha256": hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest(),
        "name_hashes": base64.b64encode(b"".join(sorted(_digest(n) for n in names))).decode("ascii"),
    }
    toy = toy_build(data_cfg)
    if toy is not None:
        entry["toy"] = toy
    return entry


def merge_records(*records: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The entries of ``records`` in order, each once (same table fingerprint and toy build)."""
    merged, seen = [], set()
    for record in records:
        for entry in record or ():
            key = (entry.get("names_sha256"), json.dumps(entry.get("toy"), sort_keys=True))
            if key not in seen:
                seen.add(key)
                merged.append(dict(entry))
    return merged or None


def decode_record(text: str | None, source: str = "the weights file") -> list[dict[str, Any]] | None:
    """The entries of a ``training_data`` metadata value (JSON); None when absent."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{source}: its training_data metadata is not valid JSON ({error})") from None
    if not isinstance(record, list) or not all(isinstance(entry, dict) for entry in record):
        raise BadInputError(f"{source}: its training_data metadata is not a list of entries")
    return record


def _same_pictures(entry: Mapping[str, Any], toy: Mapping[str, int] | None) -> bool:
    trained = entry.get("toy")
    return trained is None or toy is None or all(trained.get(k) == toy.get(k) for k in _TOY_PICTURE_KEYS)


def _toy_overlap(trained: Mapping[str, int], toy: Mapping[str, int]) -> int:
    """How many of the toy test split's pictures are in the training split of ``trained``."""
    from .toy import split_indices  # the split rule itself, not a copy of it

    train = set(split_indices(trained["num_images"], trained["split_seed"])["train"].tolist())
    test = split_indices(toy["num_images"], toy["split_seed"])["test"]
    return sum(int(i) in train for i in test)


def _refuse_or_warn(message: str, allow: bool) -> str:
    if not allow:
        raise BadInputError(message)
    log.warning("%s; scoring anyway, as %s asks", message, OVERRIDE)
    return "overridden"


def check_toy_split(record: Sequence[Mapping[str, Any]] | None, data_cfg: Any, allow: bool = False) -> None:
    """Refuse (``BadInputError``) a toy test whose split seed is not the one the model was
    trained with, before the toy tables are re-split; with ``allow`` only warn."""
    toy = toy_build(data_cfg)
    if not record or toy is None:
        return
    for entry in record:
        trained = entry.get("toy")
        if trained is None or not _same_pictures(entry, toy) or trained.get("split_seed") == toy["split_seed"]:
            continue
        shared = _toy_overlap(trained, toy)
        _refuse_or_warn(
            f"the checkpoint was trained on toy split data.build.split_seed={trained['split_seed']}, but this test "
            f"uses data.build.split_seed={toy['split_seed']}, whose test split holds {shared} of the model's "
            f"training pictures; pass data.build.split_seed={trained['split_seed']} to test on its own held-out "
            f"split, or {OVERRIDE} to score anyway", allow)  # fmt: skip


def check_overlap(record: Sequence[Mapping[str, Any]] | None, data_cfg: Any, images: Iterable[str],
                  test_table: str, allow: bool = False) -> str:  # fmt: skip
    """Refuse (``BadInputError``) a test table that lists images the model was trained on;
    with ``allow`` only warn. Returns what was found: ``passed``, ``overridden`` or
    ``not recorded`` (a weights file without the record, such as the authors' release)."""
    if not record:
        log.info("the checkpoint does not record its training data: overlap with %s not checked", test_table)
        return "not recorded"
    toy = toy_build(data_cfg)
    names = list(dict.fromkeys(images))
    outcome = "passed"
    for entry in record:
        if not _same_pictures(entry, toy) or not entry.get("name_hashes"):
            continue  # another toy build's pictures carry the same file names
        packed = base64.b64decode(entry["name_hashes"])
        trained = {packed[i:i + _DIGEST_BYTES] for i in range(0, len(packed), _DIGEST_BYTES)}
        shared = [name for name in names if _digest(name) in trained]
        if shared:
            split = f" (toy split {entry['toy']['split_seed']})" if entry.get("toy") else ""
            outcome = _refuse_or_warn(
                f"{len(shared)} of the {len(names)} images of {test_table} are among the {entry['images']} images "
                f"the checkpoint was trained on ({entry['table']}{split}), e.g. {shared[0]}; test on images it "
                f"was not trained on, or pass {OVERRIDE} to score anyway", allow)  # fmt: skip
    return outcome
