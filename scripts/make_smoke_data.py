"""Write a tiny randomly initialised MTPG-AIAA checkpoint and a few generated images.

For smoke runs of test.py / demo.py where no trained weights or BAID images exist:
the scores such a model gives mean nothing.

    python scripts/make_smoke_data.py --out outputs/smoke --num-images 24
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from mtpg_aiaa.models.mtpg.checkpoint import save_model
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

PALETTE_WORDS = ("warm", "cool", "muted", "vivid", "earthy", "pastel")


def make_image(rng: np.random.Generator, size: int = 96) -> Image.Image:
    """A painting-like picture: a colour gradient with a few soft-edged blobs."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 1, 3)
    tilt = rng.uniform(-0.5, 0.5, 3)
    canvas = base[None, None, :] + tilt[None, None, :] * (x + y)[..., None] / 2
    for _ in range(rng.integers(2, 6)):
        cx, cy, radius = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))[..., None]
        canvas = canvas * (1 - weight) + rng.uniform(0, 1, 3)[None, None, :] * weight
    return Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))


def write_smoke_data(out: Path, num_images: int = 24, seed: int = 0, backbone: str = "LongCLIP-tiny") -> dict:
    """Images, ``labels.csv`` (image,score,comment) and ``tiny_random.safetensors`` under ``out``."""
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_images):
        name = f"{i:04d}.jpg"
        make_image(rng).save(out / "images" / name, quality=90)
        words = rng.choice(PALETTE_WORDS, size=2, replace=False)
        rows.append({"image": name, "score": round(float(rng.uniform(3, 8)), 4),
                     "comment": f"A small abstract painting with {words[0]} and {words[1]} colours and soft shapes."})  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "labels.csv", index=False)
    torch.manual_seed(seed)
    model = build_mtpg(MTPGConfig(backbone=backbone, prompts="clean"))
    ckpt = save_model(model, out / "tiny_random.safetensors")
    return {"csv": out / "labels.csv", "image_root": out / "images", "ckpt": ckpt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/smoke"))
    parser.add_argument("--num-images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_smoke_data(args.out, args.num_images, args.seed)
    for key, value in paths.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
