"""``mtpg-aiaa`` (or ``python -m mtpg_aiaa``): score images with local weights, list what is registered.

    mtpg-aiaa score paintings/ --weights checkpoints/model_save.pt --descriptions descriptions.csv
    mtpg-aiaa score a.jpg b.jpg --weights cgiaa.safetensors --texts critiques.csv --out scores.csv
    mtpg-aiaa list

The system is read from the weights file (--model only checks it). Without --out the scores
are printed as a table; with it they are written as CSV (image, pred on the model's range,
pred_0_10, distribution). Input errors print one line and exit 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# Nothing heavy at module level: `--help` must not import torch (tests/test_cli_startup.py).
log = logging.getLogger("mtpg_aiaa.cli")


def _text_option(text: str) -> tuple[str, str, str]:
    """``NAME=FILE`` or ``NAME=FILE:COLUMN`` (the column defaults to NAME)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"--text wants NAME=FILE[:COLUMN], got {text!r}")
    file, _, column = rest.rpartition(":") if ":" in rest and not Path(rest).exists() else (rest, "", "")
    return name, file, column or name


def build_parser() -> argparse.ArgumentParser:
    prog = "mtpg-aiaa" if Path(sys.argv[0]).name == "mtpg-aiaa" else "python -m mtpg_aiaa"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score image files and folders with local weights",
                                description="Score image files and folders with a local weights file.")  # fmt: skip
    score.add_argument("inputs", nargs="+", help="image files and folders")
    score.add_argument("--weights", required=True, help="local weights file (never downloaded); it names its system")
    score.add_argument("--model", default=None, help="check that the file holds this system (mtpg-aiaa list)")
    score.add_argument("--descriptions", help="CSV or JSON of descriptions (MTPG-AIAA): image plus --description-column")
    score.add_argument("--description-column", default=None, help="default: comment, else description")
    score.add_argument("--texts", type=Path, help="one CSV: image plus a column per text the system reads "
                                                  "(CG-IAA: color,composition,dof,general)")  # fmt: skip
    score.add_argument("--text", action="append", default=[], type=_text_option, metavar="NAME=FILE[:COLUMN]",
                       help="one named text from its own file (repeatable)")
    score.add_argument("--out", type=Path, help="output CSV (written atomically); without it the scores are printed")
    score.add_argument("--on-bad-image", choices=("error", "skip"), default="error")
    score.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    score.add_argument("--batch-size", type=int, default=None,
                       help="images per forward pass (default 16; refused where the model scores one image at a time)")
    score.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    score.add_argument("--no-progress", action="store_true")
    commands.add_parser("list", help="registered models, tasks and datasets")
    return parser


def check_output(out: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an ``--out`` that is a directory, an input image, or not writable."""
    from .errors import SettingError

    if out.is_dir():
        raise SettingError(f"--out {out} is a directory; name a CSV file")
    resolved = out.resolve()
    for image in inputs:
        if image.resolve() == resolved:
            raise SettingError(f"--out {out} is one of the input images; name a new CSV file")
    parent = resolved.parent
    if not parent.is_dir():
        raise SettingError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise SettingError(f"--out {out} is not writable")


def read_texts(args: argparse.Namespace, text_names: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``{text name: {image: text}}`` from --texts (one CSV, a column per text), --text and --descriptions."""
    from .data.errors import BadInputError
    from .data.named_texts import read_text_file

    texts: dict[str, dict[str, str]] = {}
    if args.texts is not None:
        if not args.texts.is_file():
            raise BadInputError(f"--texts file {args.texts} does not exist")
        header = _csv_header(args.texts)
        wanted = [name for name in text_names if name in header]
        if not wanted:
            raise BadInputError(f"--texts {args.texts}: no column named like a text this model reads "
                                f"({', '.join(text_names) or 'none'}); columns found: {header}")  # fmt: skip
        texts.update({name: read_text_file(args.texts, name) for name in wanted})
    texts.update({name: read_text_file(file, column) for name, file, column in args.text})
    if args.descriptions:
        column = args.description_column or _description_column(args.descriptions)
        texts["description"] = read_text_file(args.descriptions, column)
    return texts


def _csv_header(path: Path) -> list[str]:
    first = path.read_text(encoding="utf-8-sig").splitlines()[:1]
    return [h.strip() for h in first[0].split(",")] if first else []


def _description_column(path: str) -> str:
    from .data.errors import BadInputError

    if not Path(path).is_file():
        raise BadInputError(f"--descriptions file {path} does not exist")
    return "comment" if "comment" in _csv_header(Path(path)) else "description"


def run_score(args: argparse.Namespace) -> int:
    from .api import ImageScorer, expand_images, resolve_device, resolve_weights
    from .data.errors import BadInputError
    from .errors import CheckpointError, SettingError
    from .fileio import atomic_write
    from .models.loading import load_model

    if args.batch_size is not None and args.batch_size < 1:
        raise SettingError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = resolve_device(args.device)
    weights = resolve_weights(args.weights, args.model)  # a missing file says where to put it
    images = expand_images(args.inputs, recursive=args.recursive)
    if not images:
        raise BadInputError(f"no image files in {', '.join(args.inputs)}")
    if args.out is not None:
        check_output(args.out, images)
    if args.descriptions and not Path(args.descriptions).is_file():
        raise BadInputError(f"--descriptions file {args.descriptions} does not exist")
    model = load_model(weights, device=device)
    if args.model is not None and args.model != model.system:
        raise CheckpointError(f"{weights} holds a {model.system!r} model, not --model {args.model!r}; "
                              "leave --model out (the file names its system)")  # fmt: skip
    if args.batch_size not in (None, 1) and model.outputs_depend_on_batch:
        raise SettingError(f"--batch-size {args.batch_size}: this {model.system} model (fusion=official) scores one "
                           "image at a time, because its released fusion mixes the images of a batch and a score "
                           "would depend on its batch-mates; leave --batch-size out")  # fmt: skip
    scorer = ImageScorer(model, device, args.batch_size or 16)
    result = scorer.score(images, texts=read_texts(args, scorer.text_names), on_bad_image=args.on_bad_image,
                          progress=not args.no_progress)  # fmt: skip
    if not result.scores:
        first = result.skipped[0]["reason"] if result.skipped else "none read"
        raise BadInputError(f"no image could be scored ({len(result.skipped)} skipped; first: {first})")
    frame = result.to_frame()
    summary = (f"scored {len(result.scores)} of {len(images)} image(s) with {model.system}: pred on "
               f"{scorer.score_range.describe()}, also as pred_0_10")  # fmt: skip
    if args.out is None:
        print(frame[["image", "pred", "pred_0_10"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(summary, file=sys.stderr)
    else:
        atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"{summary}; wrote {args.out}")
    skipped_path = args.out.with_name(f"{args.out.stem}.skipped.csv") if args.out is not None else None
    if result.skipped:
        import pandas as pd

        if skipped_path is not None:
            atomic_write(skipped_path, lambda tmp: pd.DataFrame(result.skipped).to_csv(tmp, index=False))
        where = f"listed in {skipped_path}" if skipped_path else "; ".join(row["image"] for row in result.skipped)
        print(f"skipped {len(result.skipped)} unreadable image(s), {where}", file=sys.stderr)
    elif skipped_path is not None and skipped_path.exists():
        skipped_path.unlink()  # an earlier run's list must not stand beside these results
    return 0


def run_list() -> int:
    from .data.catalogue import list_datasets
    from .models.registry import describe_systems  # the declarations only: no torch, no system imported

    print("models (mtpg-aiaa score --weights FILE: the file names its model), each with its tasks (python train.py task=NAME):")
    for system in describe_systems():
        low_high = system["score_range"]
        scale = f"scores {low_high['low']:g}-{low_high['high']:g}" if low_high else "score range set by its config"
        texts = ", ".join(system["text_names"]) if system["text_names"] else "none"
        print(f"  {system['name']:10s} {system['description']}")
        print(f"  {'':10s} {scale}; texts read: {texts}; tasks: {', '.join(system['tasks']) or 'none'}")
    print("datasets (python scripts/prepare_dataset.py NAME --root DIR):")
    print("  " + ", ".join(list_datasets()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .data.errors import BadInputError
    from .errors import CheckpointError, SettingError

    try:
        return run_score(args) if args.command == "score" else run_list()
    except (CheckpointError, BadInputError, SettingError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
