"""Score images with a CG-IAA scorer and show why: each image's score beside its four
attribute critiques (``demo.py --system cgiaa``).

Critiques come from the cache CSV (``image,color,composition,dof,general``) or are generated
by the released experts (``CritiqueGenerator``); the scorer reads them as its texts.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from mtpg_aiaa.data import BadInputError, load_rgb_image

from .critique_data import read_critique_csv
from .generator import CritiqueGenerator, load_generator
from .prefix import build_release_transform
from .tokenizer import load_gpt2_tokenizer


def cached_critiques(csv: str | Path, images: Sequence[Path], attributes: Sequence[str]) -> list[dict[str, str]]:
    """Each image's critiques from the cache CSV, found by its path as given, else by its file
    name when that is unique in the cache; an image with neither is an error naming it."""
    table: pd.DataFrame = read_critique_csv(csv, attributes)
    by_path = {str(row["image"]): row for row in table.to_dict("records")}
    by_name: dict[str, list[dict]] = {}
    for row in by_path.values():
        by_name.setdefault(Path(row["image"]).name, []).append(row)
    out = []
    for image in images:
        row = by_path.get(str(image))
        if row is None and len(by_name.get(image.name, [])) == 1:
            row = by_name[image.name][0]
        if row is None:
            raise BadInputError(f"{csv}: no critiques for image {str(image)!r}")
        out.append({name: str(row[name]) for name in attributes})
    return out


@torch.no_grad()
def generated_critiques(generator: CritiqueGenerator, images: Sequence[Path], device: torch.device,
                        **decoding) -> list[dict[str, str]]:  # fmt: skip
    """The released experts' critiques of ``images`` (the release's preprocessing and decoding)."""
    transform = build_release_transform(generator.clip.arch.image_size)
    pixels = torch.stack([transform(load_rgb_image(path)) for path in images]).to(device)
    return generator.critique(pixels, **decoding)


def generate_critiques(images: Sequence[Path], weights: str | Path, tokenizer: str | None,
                       device: torch.device) -> list[dict[str, str]]:  # fmt: skip
    """The critiques of ``images`` by the released experts in folder ``weights`` (``base_model.pt``
    and the four experts) with GPT-2's ``tokenizer`` (a folder; default the cached ``gpt2``):
    CG-IAA's writer of missing texts for ``demo.py`` (``generate_texts`` in system.json)."""
    generator = load_generator(weights, load_gpt2_tokenizer(tokenizer or "gpt2"), device=device)
    return generated_critiques(generator, images, device)


@torch.inference_mode()
def score_with_critiques(scorer, images: Sequence[Path], critiques: Sequence[dict[str, str]],
                         device: torch.device) -> list[dict]:  # fmt: skip
    """``[{"image", "score", "critiques": {attribute: text}}]``, each image scored alone."""
    transform = scorer.build_transform(train=False)
    results = []
    for path, texts in zip(images, critiques):
        tokens = scorer.tokenize({name: [texts[name]] for name in scorer.text_names})
        batch = {"image": transform(load_rgb_image(path)).unsqueeze(0).to(device),
                 "tokens": {name: value.to(device) for name, value in tokens.items()}}  # fmt: skip
        out = scorer(batch)
        results.append({"image": str(path), "score": round(float(out["score"][0]), 4),
                        "critiques": {name: texts[name] for name in scorer.text_names}})  # fmt: skip
    return results
