"""Write a dataset's canonical CSV from its own released files (mtpg_aiaa/data/catalogue/).

    python scripts/prepare_dataset.py ava --root /data/AVA --out data/ava.csv
    python scripts/prepare_dataset.py apdd --root /data/APDDv2 --option seed=1

Writes OUT (every split, a ``split`` column) and OUT's ``<stem>.<split>.csv`` per split,
which ``train.py``/``test.py`` read as ``data.train_csv`` / ``data.val_csv`` / ``data.csv``
with ``data.image_root=ROOT`` and the set's ``data.score_scale`` (docs/data.md).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from mtpg_aiaa.data.catalogue import get_converter, list_datasets
from mtpg_aiaa.data.catalogue.common import SPLITS
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.errors import one_line_message
from mtpg_aiaa.fileio import atomic_write


def parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option wants KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def check_output(out: Path, root: Path) -> None:
    """``--out`` must be a CSV file name in a writable folder, and it and its per-split files
    must not overwrite a file of the release under ``root``."""
    if out.is_dir():
        raise BadInputError(f"--out {out} is a folder; give a CSV file name")
    folder = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"--out {out}: cannot create files in {existing} (not a writable folder)")
    resolved_root = root.resolve()
    for path in (out, *(out.with_name(f"{out.stem}.{split}.csv") for split in SPLITS)):
        inside = resolved_root in path.resolve().parents
        if inside and path.exists():
            raise BadInputError(f"--out would overwrite {path}, a file of the release under --root {root}; "
                                "choose another --out")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"one of: {', '.join(list_datasets())}")
    parser.add_argument("--root", required=True, type=Path, help="the folder holding the set's released files")
    parser.add_argument("--out", type=Path, help="output CSV (default: data/<name>.csv)")
    parser.add_argument("--option", action="append", default=[], type=parse_option, help="converter option KEY=VALUE")
    parser.add_argument("--check-images", action="store_true", help="count (and list) images missing under --root")
    args = parser.parse_args(argv)
    out = args.out or Path("data") / f"{args.name}.csv"
    try:
        if not args.root.is_dir():
            raise BadInputError(f"--root {args.root} is not a folder")
        check_output(out, args.root)  # before the minutes a large set takes to convert
        table = get_converter(args.name)(args.root, **dict(args.option))
    except (KeyError, BadInputError, ValueError) as error:
        print(f"error: {one_line_message(error.args[0] if isinstance(error, KeyError) and error.args else error)}", file=sys.stderr)
        return 2
    try:
        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
        for split, part in table.groupby("split", sort=False):
            path = out.with_name(f"{out.stem}.{split}.csv")
            atomic_write(path, lambda tmp, part=part: part.to_csv(tmp, index=False))
    except OSError as error:  # a full disk: the earlier files are whole (atomic), this one was not written
        print(f"error: cannot write {error.filename or out}: {error.strerror or error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {count}" for split, count in table["split"].value_counts(sort=False).items())
    scores = (f"score {table['score'].min():g}-{table['score'].max():g} (scale max {table.attrs['scale_max']:g})"
              if "score" in table and "scale_max" in table.attrs else "no scores (a description set)")  # HAND has none
    print(f"{args.name}: {len(table)} images ({counts}); {scores}; wrote {out} and its per-split files")
    if args.check_images:
        missing = [image for image in table["image"] if not (args.root / image).is_file()]
        print(f"{len(missing)} of {len(table)} images missing under {args.root}" + (f", e.g. {missing[0]}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
