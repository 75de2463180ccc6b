"""Write CG-IAA's four attribute critiques for images with the released weights.

    python scripts/critique.py --weights checkpoints/cgiaa --tokenizer checkpoints/gpt2 a.jpg b.jpg
    python scripts/critique.py --weights DIR --tokenizer gpt2 a.jpg --device cuda --json

``--weights`` holds the authors' files ``base_model.pt color.pt composition.pt dof.pt
general.pt``; ``--tokenizer`` is a folder with GPT-2's ``vocab.json`` and ``merges.txt`` (any
folder saved by transformers) or a Hugging Face name already in the local cache. Decoding is the
release's (beam 5, up to 67 tokens, stop at "."); ``--literal`` runs the release's own
uncached loop one image at a time instead of our batched, cached search.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mtpg_aiaa.arg_types import int_at_least
from mtpg_aiaa.errors import SettingError, one_line_message

# torch, transformers and the experts are imported where they are used: `--help` waits for none of them.

TITLES = {"color": "Color and Light", "composition": "Composition", "dof": "Depth and Focus", "general": "General Feelings"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files")
    parser.add_argument("--weights", type=Path, required=True, help="folder with base_model.pt and the four experts")
    parser.add_argument("--tokenizer", required=True, help="GPT-2 tokenizer folder, or a cached Hugging Face name")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of readable blocks")
    parser.add_argument("--csv", type=Path, help="also write the critique cache CSV (image,color,composition,dof,general)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="images decoded together")
    parser.add_argument("--beam-size", type=int_at_least(1), default=None, help="default: the release's")
    parser.add_argument("--max-steps", type=int_at_least(1), default=None,
                        help="longest critique in tokens; default: the release's")
    parser.add_argument("--clean-up-spaces", action="store_true",
                        help="drop spaces before punctuation, as transformers < 4.45 decoded by default")
    parser.add_argument("--literal", action="store_true", help="the release's uncached one-image loop (slow)")
    return parser.parse_args(argv)


def check_csv_output(path: Path, images: list[Path]) -> None:
    """``--csv`` checked before the minutes of decoding: not a folder, not an input, writable."""
    if path.is_dir():
        raise SettingError(f"--csv {path} is a folder; give a file name")
    if any(path.resolve() == image.resolve() for image in images):
        raise SettingError(f"--csv {path} is one of the input images; it would be overwritten")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SettingError(f"--csv {path}: cannot write into {folder} ({'missing' if not folder.is_dir() else 'not writable'})")


def critique_files(args: argparse.Namespace) -> list[dict[str, str]]:
    """``[{"image", "color", "composition", "dof", "general"}]`` for ``args.images``, in order."""
    import torch

    from mtpg_aiaa.data import load_rgb_image
    from mtpg_aiaa.models.cgiaa import ATTRIBUTES, build_release_transform, load_generator, load_gpt2_tokenizer
    from mtpg_aiaa.models.cgiaa.beam import RELEASED_BEAM_SIZE, RELEASED_MAX_STEPS
    from mtpg_aiaa.models.cgiaa.tokenizer_check import check_tokenizer_files

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SettingError("--device cuda: no CUDA device is available")
    if args.csv:
        check_csv_output(args.csv, args.images)
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:  # before the minutes it takes to load five weight files
        raise FileNotFoundError(f"image not found: {missing[0]}" + (f" ({len(missing)} in all)" if len(missing) > 1 else ""))
    check_tokenizer_files(args.tokenizer)  # a corrupt vocab.json: one line, not the tokenizers library's traceback
    generator = load_generator(args.weights, load_gpt2_tokenizer(args.tokenizer), device=args.device)
    generator.clean_up_spaces = args.clean_up_spaces
    transform = build_release_transform(generator.clip.arch.image_size)  # 224 for the released base model
    critiques = []
    for start in range(0, len(args.images), args.batch_size):  # images read a batch at a time
        chunk = args.images[start : start + args.batch_size]
        images = torch.stack([transform(load_rgb_image(path)) for path in chunk]).to(args.device)
        critiques += generator.critique(
            images, beam_size=RELEASED_BEAM_SIZE if args.beam_size is None else args.beam_size,
            max_steps=RELEASED_MAX_STEPS if args.max_steps is None else args.max_steps,
            literal=args.literal, batch_size=args.batch_size,
        )  # fmt: skip
    return [{"image": str(path), **{name: row[name] for name in ATTRIBUTES}} for path, row in zip(args.images, critiques)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mtpg_aiaa.data import BadInputError
    from mtpg_aiaa.models.cgiaa import ATTRIBUTES
    from mtpg_aiaa.models.cgiaa.critique_data import write_critique_csv

    try:
        rows = critique_files(args)
    except (BadInputError, FileNotFoundError, ValueError) as error:
        print(f"error: {one_line_message(error)}", file=sys.stderr)
        return 2
    if args.csv:
        try:
            write_critique_csv(rows, args.csv)
        except OSError as error:
            print(f"error: cannot write {args.csv}: {error.strerror or error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        print(f"== {row['image']}")
        for name in ATTRIBUTES:
            print(f"[{TITLES[name]}] {row[name]}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
