"""``python -m mtpg_aiaa``: score images with local weights, list what is registered.

    python -m mtpg_aiaa score --model mtpg --weights checkpoints/model_save.pt paintings/ \\
        --descriptions descriptions.csv --out scores.csv
    python -m mtpg_aiaa list
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .backbone.convert import CheckpointError
from .data.errors import BadInputError
from .fileio import atomic_write


def _text_option(text: str) -> tuple[str, str, str]:
    """``NAME=FILE`` or ``NAME=FILE:COLUMN`` (the column defaults to NAME)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"--text wants NAME=FILE[:COLUMN], got {text!r}")
    file, _, column = rest.rpartition(":") if ":" in rest and not Path(rest).exists() else (rest, "", "")
    return name, file, column or name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtpg_aiaa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score image files and folders with local weights")
    score.add_argument("inputs", nargs="+", help="image files and folders")
    score.add_argument("--model", required=True, help="registered system (python -m mtpg_aiaa list)")
    score.add_argument("--weights", required=True, help="local weights file (never downloaded)")
    score.add_argument("--descriptions", help="CSV or JSON of descriptions: image plus --description-column")
    score.add_argument("--description-column", default=None, help="default: comment, else description")
    score.add_argument("--text", action="append", default=[], type=_text_option, metavar="NAME=FILE[:COLUMN]",
                       help="another named text the system reads (CG-IAA, AesNet)")
    score.add_argument("--out", required=True, type=Path, help="output CSV: image, score, score_0_10, distribution")
    score.add_argument("--on-bad-image", choices=("error", "skip"), default="error")
    score.add_argument("--recursive", action="store_true", help="look for images in sub-folders too")
    score.add_argument("--batch-size", type=int, default=16)
    score.add_argument("--device", default="auto")
    score.add_argument("--no-progress", action="store_true")
    commands.add_parser("list", help="registered models, tasks and datasets")
    return parser


def run_score(args: argparse.Namespace) -> int:
    from .api import create_scorer, expand_images, resolve_weights
    from .data.named_texts import read_text_file

    resolve_weights(args.weights, args.model)  # a missing file says where to put it before anything else
    images = expand_images(args.inputs, recursive=args.recursive)
    if not images:
        raise BadInputError(f"no image files in {', '.join(args.inputs)}")
    texts = {name: read_text_file(file, column) for name, file, column in args.text}
    if args.descriptions:
        texts["description"] = read_text_file(args.descriptions, args.description_column or _description_column(args.descriptions))
    scorer = create_scorer(args.model, weights=args.weights, device=args.device, batch_size=args.batch_size)
    result = scorer.score(images, texts=texts, on_bad_image=args.on_bad_image, progress=not args.no_progress)
    frame = result.to_frame()
    atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    r = result.score_range
    print(f"scored {len(result.scores)} of {len(images)} image(s) with {args.model}: scores on {r.low:g}-{r.high:g} "
          f"({'higher' if r.higher_is_better else 'lower'} is better), also as score_0_10; wrote {args.out}")  # fmt: skip
    if result.skipped:
        skipped_path = args.out.with_name(f"{args.out.stem}.skipped.csv")
        import pandas as pd

        atomic_write(skipped_path, lambda tmp: pd.DataFrame(result.skipped).to_csv(tmp, index=False))
        print(f"skipped {len(result.skipped)} unreadable image(s), listed in {skipped_path}")
    return 0


def _description_column(path: str) -> str:
    first = Path(path).read_text(encoding="utf-8-sig").splitlines()[:1]
    header = first[0].split(",") if first else []
    return "comment" if "comment" in [h.strip() for h in header] else "description"


def run_list() -> int:
    from .data.catalogue import list_datasets
    from .models.registry import describe_systems  # the declarations only: no torch, no system imported

    print("models (python -m mtpg_aiaa score --model NAME), each with its tasks (python train.py task=NAME):")
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
    try:
        return run_score(args) if args.command == "score" else run_list()
    except (CheckpointError, BadInputError, KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
