"""AVA (Murray et al., CVPR 2012): ``AVA.txt`` and ``aesthetics_image_lists/``.

``AVA.txt`` has one line per image, 15 space-separated fields: row number, image id, the
number of votes for each score 1..10, two semantic tag ids and the challenge id. Images are
``images/<id>.jpg``. The score is the vote-weighted mean on 1-10; the ten counts become
``dist_1..dist_10``.

Split: the released aesthetics lists, ``generic_test.jpgl`` (test) and
``generic_ls_train.jpgl`` (train; the large-scale list). ``unlisted="train"`` instead trains
on every image not in the test list (the protocol of NIMA and most later work);
``unlisted="drop"`` (default) keeps the released lists exactly.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import register_dataset
from .common import canonical_table, find_dir, find_file
from ...errors import SettingError
from ..errors import BadInputError

SCALE_MAX = 10.0
FIELDS = 15
UNLISTED = ("drop", "train")


def read_id_list(path: Path) -> set[str]:
    """Image ids of a ``.jpgl`` list (one per line)."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


@register_dataset("ava")
def convert(root: Path, unlisted: str = "drop") -> pd.DataFrame:
    root = Path(root)
    if unlisted not in UNLISTED:
        raise SettingError(f"ava: option unlisted must be one of {UNLISTED}, got {unlisted!r}")
    labels = find_file(root, ("AVA.txt", "AVA_dataset/AVA.txt"), "AVA.txt")
    lists = labels.parent / "aesthetics_image_lists"
    test_ids = read_id_list(find_file(lists, ("generic_test.jpgl",), "the AVA test list"))
    train_ids = read_id_list(find_file(lists, ("generic_ls_train.jpgl",), "the AVA training list"))
    images = find_dir(root, ("images", "image", "AVA_dataset/images"), "images")
    rows = []
    for line_number, line in enumerate(labels.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != FIELDS:
            raise BadInputError(f"{labels}, line {line_number}: expected {FIELDS} fields, found {len(fields)}")
        image_id = fields[1]
        try:
            counts = [int(value) for value in fields[2:12]]
        except ValueError:
            raise BadInputError(f"{labels}, line {line_number}: vote counts {fields[2:12]} are not integers") from None
        if sum(counts) <= 0 or min(counts) < 0:
            raise BadInputError(f"{labels}, line {line_number}: image {image_id} has no votes")
        split = "test" if image_id in test_ids else "train" if image_id in train_ids or unlisted == "train" else None
        if split is None:
            continue
        score = sum((k + 1) * c for k, c in enumerate(counts)) / sum(counts)
        row = {"image": f"{images}/{image_id}.jpg", "score": score, "split": split, "_where": f"{labels}, line {line_number}"}
        row.update({f"dist_{k + 1}": c for k, c in enumerate(counts)})
        row.update({"semantic_tag_1": int(fields[12]), "semantic_tag_2": int(fields[13]), "challenge": int(fields[14])})
        rows.append(row)
    return canonical_table(rows, SCALE_MAX, "ava")
