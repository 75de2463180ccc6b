"""Build the synthetic toy-art dataset (BAID layout) for quickstarts and tests without BAID.

    python scripts/make_toy_dataset.py --root data/toy --num-images 6000 --image-size 96
    python scripts/make_toy_dataset.py --root data/toy --split-seed 101   # a held-out split, same pictures
    python scripts/make_toy_dataset.py --root data/toy --check   # + learnability baselines

``--check`` fits two ridge regressions on the train split and reports test SRCC:
one on hand-crafted image statistics (hue concentration, noise and blur estimates,
left/right centroid of visual mass) and one on the bag of words of the descriptions;
beside them the ceiling, the SRCC of the noise-free factor sum ``z`` with the score.
See docs/toy_dataset.md.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from scipy.stats import spearmanr

from mtpg_aiaa.arg_types import int_at_least
from mtpg_aiaa.errors import one_line_message
from mtpg_aiaa.data import BadInputError, read_score_table
from mtpg_aiaa.data.toy import make_toy_dataset

SPLITS = ("train", "val", "test")


def image_statistics(path: Path) -> list[float]:
    """Twelve hand-made measurements of one picture, one or more per quality factor."""
    rgb = np.asarray(Image.open(path).convert("RGB").resize((96, 96), Image.BOX))  # scales in px at 96
    # Colour harmony: how concentrated the hues are (first and second circular moments,
    # the second also catching complementary pairs), per pixel and per colour cluster.
    small = cv2.resize(cv2.medianBlur(rgb, 3), (24, 24), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue, sat = hsv[..., 0] / 256 * 2 * np.pi, hsv[..., 1] / 255
    moments = [abs(np.sum(sat**2 * np.exp(1j * k * hue)) / np.sum(sat**2)) for k in (1, 2)]
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, _, centres = cv2.kmeans(small.reshape(-1, 3).astype(np.float32), 6, None, criteria, 2,
                               cv2.KMEANS_PP_CENTERS)
    chsv = cv2.cvtColor(np.clip(centres, 0, 255).astype(np.uint8)[None], cv2.COLOR_RGB2HSV_FULL)[0]
    c_hue, c_sat = chsv[:, 0] / 256 * 2 * np.pi, chsv[:, 1] / 255 + 1e-6
    moments += [abs(np.sum(c_sat * np.exp(1j * k * c_hue)) / np.sum(c_sat)) for k in (1, 2)]
    # Grain: robust noise level from a second-difference filter (edges are rare, so the
    # median sees noise). Sharpness: strongest gradients at several smoothing scales.
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    noise = np.median(np.abs(cv2.filter2D(gray, -1, kernel)))
    edges = []
    for sigma in (0.5, 1.0, 2.0, 4.0):
        blurred = cv2.GaussianBlur(gray, (0, 0), sigma)
        magnitude = np.hypot(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
        edges.append(np.log(np.quantile(magnitude, 0.995) + 1e-3))
    # Balance: left/right centroid of colour that stands out from its row, and of
    # vertical edges.
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (0, 0), 1.5), cv2.COLOR_RGB2LAB).astype(np.float32)
    salience = np.linalg.norm(lab - np.median(lab, axis=1, keepdims=True), axis=2).sum(0)
    x_edges = np.abs(cv2.Sobel(cv2.GaussianBlur(gray, (0, 0), 1.5), cv2.CV_32F, 1, 0))
    x_edges = np.maximum(x_edges - np.median(x_edges), 0).sum(0)
    xs = np.linspace(0, 1, rgb.shape[1])
    offsets = [abs(np.sum(w * xs) / (np.sum(w) + 1e-6) - 0.5) for w in (salience, x_edges)]
    return [*moments, float(sat.std()), float(np.log(noise + 1e-3)), *edges, *offsets]


def _quadratic(x: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(x), 1)), x] + [x[:, i:i + 1] * x[:, i:] for i in range(x.shape[1])])


def ridge_srcc(x_train, y_train, x_test, y_test, alpha=1.0, quadratic=True) -> float:
    """Test SRCC of a ridge regression fitted on standardised (and squared) features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9
    expand = _quadratic if quadratic else (lambda x: np.hstack([np.ones((len(x), 1)), x]))
    a_train, a_test = expand((x_train - mean) / std), expand((x_test - mean) / std)
    beta = np.linalg.solve(a_train.T @ a_train + alpha * np.eye(a_train.shape[1]), a_train.T @ y_train)
    return float(spearmanr(a_test @ beta, y_test)[0])


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower())


def learnability(paths: dict) -> dict[str, float]:
    """Test SRCC of the image-statistics and description-only ridge baselines."""
    tables = {split: read_score_table(paths[f"{split}_csv"]) for split in ("train", "test")}
    image_root = Path(paths["image_root"])
    features = {split: np.array([image_statistics(image_root / name) for name in table.image])
                for split, table in tables.items()}
    vocabulary = {w: i for i, w in enumerate(sorted({w for t in tables["train"].description for w in _words(t)}))}

    def bag(texts):
        counts = np.zeros((len(texts), len(vocabulary)))
        for row, text in enumerate(texts):
            for word in _words(text):
                if word in vocabulary:
                    counts[row, vocabulary[word]] = 1
        return counts

    train, test = tables["train"], tables["test"]
    factors = pd.read_csv(paths["factors_csv"]).set_index("image").loc[test.image]
    z = factors.harmony + factors.sharpness + (1 - factors.grain) + factors.balance
    return {
        "noise_free_factors_srcc": float(spearmanr(z, test.score)[0]),
        "image_statistics_srcc": ridge_srcc(features["train"], train.score.to_numpy(),
                                            features["test"], test.score.to_numpy()),
        "description_bow_srcc": ridge_srcc(bag(train.description), train.score.to_numpy(),
                                           bag(test.description), test.score.to_numpy(), quadratic=False),
    }


MIN_IMAGES, MIN_IMAGE_SIZE = 3, 16  # make_toy_dataset's own floor: three splits, a 16-pixel canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/toy"))
    parser.add_argument("--num-images", type=int_at_least(MIN_IMAGES), default=6000)  # as data=toy
    parser.add_argument("--image-size", type=int_at_least(MIN_IMAGE_SIZE), default=96)
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="the pictures")
    parser.add_argument("--split-seed", type=int_at_least(0), default=None,
                        help="the split (default: --seed); 0 is the development split, 101-103 held out")
    parser.add_argument("--workers", type=int_at_least(1), default=1)
    parser.add_argument("--check", action="store_true", help="also report the learnability baselines")
    args = parser.parse_args()
    try:
        paths = make_toy_dataset(args.root, args.num_images, args.image_size, args.seed, workers=args.workers,
                                 split_seed=args.split_seed)
    except BadInputError as error:
        print(f"error: {one_line_message(error)}", file=sys.stderr)
        return 2
    except (PermissionError, NotADirectoryError, FileExistsError) as error:  # a place we cannot write
        print(f"error: cannot write the toy dataset under --root {args.root}: {one_line_message(error)}", file=sys.stderr)
        return 2
    print(f"{'wrote' if paths['built'] else 'reused'} toy dataset in {paths['root']} "
          f"(images in {paths['image_root']})")
    for split in SPLITS:
        scores = read_score_table(paths[f"{split}_csv"]).score
        print(f"  {split:5s}: {len(scores):5d} rows, mean {scores.mean():.3f}, sd {scores.std():.3f}, "
              f"range {scores.min():.2f}-{scores.max():.2f}, share > 5: {100 * (scores > 5).mean():.1f} %")
    if args.check:
        for name, value in learnability(paths).items():
            print(f"  test SRCC, {name.replace('_srcc', '').replace('_', ' ')}: {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
