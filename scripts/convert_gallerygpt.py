"""Merge GalleryGPT's LoRA adapter and projector into ShareGPT4V-7B; write the llava-hf layout.

    python scripts/convert_gallerygpt.py --base ShareGPT4V-7B/ --lora GalleryGPT/ \
        --vision-tower ShareGPT4V-7B_Pretrained_vit-large336-l12/ --out checkpoints/gallerygpt-hf

Then: python scripts/describe.py describer.model_path=checkpoints/gallerygpt-hf ...
Everything is read from local directories (see docs/descriptions.md for what to fetch);
a missing file is reported with every other missing file, before any weight is loaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mtpg_aiaa.data import BadInputError
from mtpg_aiaa.describe.convert import convert_gallerygpt
from mtpg_aiaa.errors import one_line_message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="ShareGPT4V-7B in the original LLaVA layout")
    parser.add_argument("--lora", type=Path, required=True,
                        help="GalleryGPT: adapter_config.json, adapter_model.bin, non_lora_trainables.bin")
    parser.add_argument("--vision-tower", type=Path,
                        help="CLIP ViT-L/14-336 of ShareGPT4V (default: the base config's mm_vision_tower, if local)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (llava-hf layout)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                        help="weights' dtype (auto: the base checkpoint's)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = convert_gallerygpt(args.base, args.lora, args.out, vision_tower=args.vision_tower,
                                    dtype=args.dtype, overwrite=args.overwrite)  # fmt: skip
    except (BadInputError, ValueError, FileExistsError) as error:
        print(f"error: {one_line_message(error)}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
