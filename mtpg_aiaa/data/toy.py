"""A synthetic "toy-art" dataset in BAID layout whose scores are caused by what is painted.

Each painting is drawn from latent factors on [0, 1] (higher = better, except grain):
``harmony`` (palette hues keep to an analogous or complementary scheme, or scatter
over the whole wheel), ``sharpness`` (Gaussian blur sigma 0.5 + 2.5 * (1 - sharpness)
px at 96 px), ``grain`` (additive noise, std 0.1 * grain of the intensity range) and
``balance`` (visual mass centred, or squeezed and piled on ``heavy_side``).
``subject`` (landscape, portrait, abstract, still life) only changes the content.
The score is::

    z = (harmony + sharpness + (1 - grain) + balance - 2) / sqrt(4 / 12)  # sd 1
    score = 10 * sigmoid(-0.22 + 0.13 * z' + 0.15 * max(z', 0) ** 2),  z' = z + N(0, 0.3^2)

which gives BAID-like scores (mean ~4.65, ~21 % above 5, 1-99 % range ~3.7-7.1).
Descriptions mention each quality with probability 0.6, wrongly with probability 0.12.
Everything about image ``i`` comes from ``SeedSequence([seed, i])``, so builds are
byte-identical with any number of workers. See docs/toy_dataset.md.
"""

from __future__ import annotations

import colorsys
import contextlib
import csv
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

GENERATOR_VERSION = 1
SUBJECTS = ("landscape", "portrait", "abstract", "still life")
QUALITY_FACTORS = ("harmony", "sharpness", "grain", "balance")
SCORE_NOISE, SCORE_A, SCORE_B, SCORE_C = 0.3, -0.22, 0.13, 0.15
BASE_BLUR, BLUR_MAX, NOISE_MAX = 0.5, 2.5, 0.10  # blur sigmas in px at 96 px; noise std on [0, 1]
GRAIN_SIGMA = 0.5  # grain clump size in px at 96 px, so grain looks alike at every size
MENTION_PROB, WRONG_PROB = 0.6, 0.12
JPEG_QUALITY = 92
FACTOR_COLUMNS = ("image", "split", "subject", "scheme", "base_hue", "heavy_side", *QUALITY_FACTORS,
                  "blur_sigma", "noise_std", "score_noise", "score")


@dataclass(frozen=True)
class ToySample:
    """One painting: ``image`` uint8 [H, W, 3], its latent ``factors``, ``score`` on [0, 10]."""

    image: np.ndarray
    factors: dict[str, Any]
    score: float
    description: str


def toy_score(harmony, sharpness, grain, balance, score_noise=0.0):
    """The documented score formula (works on floats or numpy arrays)."""
    z = (np.asarray(harmony) + sharpness + (1 - np.asarray(grain)) + balance - 2) / np.sqrt(4 / 12)
    z = z + score_noise
    logit = SCORE_A + SCORE_B * z + SCORE_C * np.maximum(z, 0) ** 2
    return 10 / (1 + np.exp(-logit))


def generate_toy_sample(index: int, seed: int = 0, image_size: int = 96) -> ToySample:
    """Render painting ``index`` of the dataset with ``seed`` in memory.

    Factors, score and description do not depend on ``image_size``.
    """
    factor_rng, render_rng, text_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3))
    f = {name: float(factor_rng.uniform()) for name in QUALITY_FACTORS}
    f.update(subject=SUBJECTS[factor_rng.integers(len(SUBJECTS))],
             scheme=("analogous", "complementary")[factor_rng.integers(2)],
             base_hue=float(factor_rng.uniform()), heavy_side=("left", "right")[factor_rng.integers(2)],
             score_noise=float(factor_rng.normal(0, SCORE_NOISE)))
    f["blur_sigma"] = BASE_BLUR + BLUR_MAX * (1 - f["sharpness"])
    f["noise_std"] = NOISE_MAX * f["grain"]
    score = float(toy_score(f["harmony"], f["sharpness"], f["grain"], f["balance"], f["score_noise"]))
    return ToySample(_render(render_rng, f, image_size), f, score, _describe(text_rng, f))


# ---------------------------------------------------------------- rendering

def _palette(rng: np.random.Generator, f: dict) -> list[tuple[int, int, int]]:
    """Five colours: 0-1 background (light), 2-4 foreground. Low harmony = scattered hues."""
    # Harmonious schemes: one hue family, or one family plus a complementary accent
    # (a foreground colour half a turn away). Each hue then leaves its scheme by
    # (1 - harmony) times an offset from a set spread evenly over the whole wheel.
    offsets = rng.uniform(-0.06, 0.06, 5)
    if f["scheme"] == "complementary":
        offsets[2 + rng.integers(3)] += 0.5
    clash = (rng.permutation(5) / 5 + rng.uniform()) % 1 - 0.5
    chaos = 1 - f["harmony"]
    hues = (f["base_hue"] + offsets + chaos * clash) % 1
    sats = np.clip(rng.uniform(0.45, 0.75) + chaos * rng.uniform(-0.35, 0.35, 5), 0.1, 1)
    vals = np.concatenate([rng.uniform(0.75, 0.95, 2), rng.uniform(0.3, 0.8, 3)])
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v)) for h, s, v in zip(hues, sats, vals)]


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def _render(rng: np.random.Generator, f: dict, size: int) -> np.ndarray:
    pal = _palette(rng, f)
    # Background: a gradient between the two light colours with a faint low-frequency mottle.
    angle = np.pi / 2 + rng.uniform(-0.5, 0.5)  # top to bottom, so it adds no left/right weight
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    canvas = (1 - t) * np.float32(pal[0]) + t * np.float32(pal[1])
    mottle = cv2.resize(rng.normal(size=(5, 5)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    canvas *= (1 + 0.05 * mottle)[..., None]
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    px = lambda v: int(round(v * size))  # noqa: E731 - normalised coordinate to pixels
    # Brush texture: short strokes in every palette colour, spread evenly, so the whole
    # palette shows in every picture without adding weight to either side.
    x0, y0 = rng.uniform(0, size, (2, 40))
    angle, length, light = rng.uniform(0, np.pi, 40), rng.uniform(0.03, 0.08, 40) * size, rng.uniform(0.85, 1.1, 40)
    x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
    width = max(1, px(0.025))
    for k, line in enumerate(np.rint(np.stack([x0, y0, x1, y1], 1)).astype(int).tolist()):
        draw.line(line, fill=_shade(pal[k % 5], light[k]), width=width)
    # Foreground: mirror-symmetric about x = 0.5 (pairs share size and colour), then
    # squeezed towards and pushed to the heavy side by (1 - balance).
    side = -1 if f["heavy_side"] == "left" else 1
    squeeze, push = 0.35 + 0.65 * f["balance"], 0.32 * (1 - f["balance"]) * side
    mx = lambda x: 0.5 + (x - 0.5) * squeeze + push  # noqa: E731

    def blob(x, y, rx, ry, colour, kind="ellipse"):
        box = [px(mx(x) - rx), px(y - ry), px(mx(x) + rx), px(y + ry)]
        (draw.rectangle if kind == "rect" else draw.ellipse)(box, fill=colour)

    subject = f["subject"]
    if subject == "landscape":
        horizon = rng.uniform(0.45, 0.65)
        draw.rectangle([0, px(horizon), size, size], fill=_shade(pal[1], 0.7))
        peak = rng.uniform(0.2, 0.32)
        draw.polygon([(px(mx(0.5 - 0.3)), px(horizon)), (px(mx(0.5)), px(peak)),
                      (px(mx(0.5 + 0.3)), px(horizon))], fill=pal[2])
        blob(0.5, rng.uniform(0.07, 0.11), 0.05, 0.05, pal[4])
        for _ in range(rng.integers(1, 3)):
            d, r, y = rng.uniform(0.2, 0.42), rng.uniform(0.05, 0.09), horizon + rng.uniform(0.05, 0.2)
            for x in (0.5 - d, 0.5 + d):
                blob(x, y + r, 0.012, r, _shade(pal[3], 0.5), "rect")
                blob(x, y - 0.01, r, r * 1.2, pal[3])
    elif subject == "portrait":
        head = rng.uniform(0.1, 0.15)
        blob(0.5, 1.0, rng.uniform(0.2, 0.28), 0.35, pal[2])
        blob(0.5, 0.4, head * 1.2, head * 1.5, pal[4])
        blob(0.5, 0.45, head, head * 1.3, pal[3])
    elif subject == "abstract":
        blob(0.5, rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.12), rng.uniform(0.05, 0.2), pal[2 + rng.integers(3)])
        for _ in range(rng.integers(2, 4)):
            d, y = rng.uniform(0.12, 0.38), rng.uniform(0.15, 0.85)
            rx, ry, kind = rng.uniform(0.04, 0.12), rng.uniform(0.04, 0.15), ("ellipse", "rect")[rng.integers(2)]
            colour = pal[2 + rng.integers(3)]
            for x in (0.5 - d, 0.5 + d):
                blob(x, y, rx, ry, colour, kind)
    else:  # still life
        table = rng.uniform(0.62, 0.75)
        draw.rectangle([0, px(table), size, size], fill=_shade(pal[1], 0.65))
        vase_h = rng.uniform(0.15, 0.22)
        blob(0.5, table - vase_h - 0.08, 0.03, 0.08, pal[2], "rect")
        blob(0.5, table - vase_h * 0.7, 0.09, vase_h * 0.7, pal[2])
        for _ in range(rng.integers(1, 3)):
            d, r, colour = rng.uniform(0.2, 0.38), rng.uniform(0.04, 0.07), pal[3 + rng.integers(2)]
            for x in (0.5 - d, 0.5 + d):
                blob(x, table - r * 0.8, r, r, colour)

    out = np.asarray(img, dtype=np.float32)
    scale = size / 96
    # blur_sigma includes BASE_BLUR: a little softening always (paint, not vector art).
    out = cv2.GaussianBlur(out, (0, 0), f["blur_sigma"] * scale)
    grain = rng.standard_normal(out.shape, dtype=np.float32)
    if GRAIN_SIGMA > 0:  # clumped grain, rescaled back to unit std
        grain = cv2.GaussianBlur(grain, (0, 0), GRAIN_SIGMA * scale)
        grain /= grain.std() + 1e-6
    out += (255 * f["noise_std"]) * grain
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- descriptions

_OPENERS = {
    "landscape": ("A landscape of {} under a wide sky.",
                  ("a lone mountain and trees", "hills beside a quiet valley", "a peak rising over open fields")),
    "portrait": ("A portrait of {} seen from the shoulders up.",
                 ("a young woman", "an old man", "a child", "a figure in a dark coat")),
    "abstract": ("An abstract composition of {}.",
                 ("floating discs and blocks", "overlapping ellipses and bars", "loose geometric forms")),
    "still life": ("A still life of {} on a table.",
                   ("a vase and some fruit", "a tall jug beside apples", "a vase with oranges")),
}
# Per factor: (phrases for the better half, phrases for the worse half).
_PHRASES = {
    "harmony": (("a harmonious {temp} palette", "well-matched {temp} colours", "a calm, unified colour scheme"),
                ("clashing colours", "a discordant palette of jarring hues", "colours that fight each other")),
    "sharpness": (("crisp details", "clean, precise edges", "sharply defined forms"),
                  ("soft, blurry brushwork", "hazy, out-of-focus forms", "smudged, indistinct outlines")),
    "grain": (("a smooth, clean surface", "an even, noise-free finish"),
              ("a grainy texture", "a speckled, noisy surface", "a gritty, grainy finish")),
    "balance": (("a balanced composition", "a well-centred arrangement", "an evenly weighted layout"),
                ("a weighty {side} side", "a lopsided composition crowded to the {side}",
                 "visual weight piled on the {side}")),
}
_MENTION_SENTENCES = ("The painter works with {}.", "It shows {}.", "The picture is rendered with {}.", "Note {}.")
_FILLERS = ("Light falls gently across the scene from above.", "The mood is quiet and contemplative overall.",
            "The scene is painted in a loose, gestural manner.", "Nothing in the frame distracts from the main motif.",
            "The canvas is of modest size, painted in oils.")


def _temperature(hue: float) -> str:
    return "warm" if hue < 0.12 or hue > 0.92 else "earthy" if hue < 0.4 else "cool" if hue < 0.75 else "violet"


def _describe(rng: np.random.Generator, f: dict) -> str:
    """1-4 sentences, 20-80 words: the subject plus an imperfect account of the qualities."""
    template, choices = _OPENERS[f["subject"]]
    sentences = [template.format(choices[rng.integers(len(choices))])]
    phrases = []
    for name in QUALITY_FACTORS:
        # Draws happen whether or not the factor is mentioned, so mentions stay independent.
        mention, wrong, pick = rng.uniform() < MENTION_PROB, rng.uniform() < WRONG_PROB, rng.uniform()
        good = (1 - f[name] if name == "grain" else f[name]) >= 0.5
        options = _PHRASES[name][0 if good != wrong else 1]
        if mention:
            phrases.append(options[int(pick * len(options))].format(
                temp=_temperature(f["base_hue"]), side=f["heavy_side"]))
    rng.shuffle(phrases)
    for chunk in (phrases[:2], phrases[2:]):
        if chunk:
            sentence = _MENTION_SENTENCES[rng.integers(len(_MENTION_SENTENCES))].format(" and ".join(chunk))
            sentences.append(sentence[0].upper() + sentence[1:])
    fillers = list(rng.permutation(len(_FILLERS)))
    while sum(len(s.split()) for s in sentences) < 20 and len(sentences) < 4:
        sentences.append(_FILLERS[fillers.pop()])
    return " ".join(sentences)


# ---------------------------------------------------------------- writing the dataset

def _render_row(job: tuple[int, int, int, str]) -> dict[str, Any]:
    index, seed, size, image_dir = job
    sample = generate_toy_sample(index, seed, size)
    name = f"{index:05d}.jpg"
    buffer = io.BytesIO()
    Image.fromarray(sample.image).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    Path(image_dir, name).write_bytes(buffer.getvalue())
    return {"image": name, **sample.factors, "score": sample.score, "comment": sample.description}


def _write_csv(path: Path, columns, rows) -> None:
    """Write a table whole or not at all (a temporary sibling renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])
    os.replace(tmp, path)


def _summary(root: Path, params: dict, built: bool) -> dict[str, Any]:
    files = {f"{split}_csv": str(root / f"{split}_set.csv") for split in ("train", "val", "test")}
    return {"root": str(root), "image_root": str(root / "images"), **files,
            "factors_csv": str(root / "factors.csv"), "params": params, "built": built}


def make_toy_dataset(root, num_images: int = 6000, image_size: int = 96, seed: int = 0,
                     splits=(0.8, 0.1, 0.1), workers: int = 1, progress: bool = True,
                     split_seed: int | None = None) -> dict[str, Any]:
    """Write the toy-art dataset under ``root`` (or reuse it if already built the same way).

    Layout: ``images/{i:05d}.jpg``, ``{train,val,test}_set.csv`` (``image,score,comment``,
    scores with 4 decimals), ``factors.csv`` (latent factors per image), ``README.txt``
    and ``.complete`` (the parameters as JSON, written last). The build happens in a
    temporary sibling directory renamed into place, so a partial build never looks
    complete. ``workers`` only changes speed, never the bytes written.

    ``seed`` decides the pictures (image ``i`` comes from ``SeedSequence([seed, i])``);
    ``split_seed`` (default: ``seed``) decides which split each picture lands in, so one
    set of pictures can be split anew for a held-out measurement. Changing only
    ``split_seed`` or ``splits`` rewrites the tables and keeps the images.

    Returns: dict with ``root``, ``image_root``, ``train_csv``, ``val_csv``, ``test_csv``,
    ``factors_csv``, ``params`` and ``built`` (False when an existing build was reused).
    """
    root = Path(root)
    if len(splits) != 3 or min(splits) <= 0 or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(f"splits must be three positive fractions summing to 1, got {splits}")
    split_seed = seed if split_seed is None else split_seed
    if num_images < 3 or image_size < 16 or seed < 0 or split_seed < 0 or workers < 1:
        raise ValueError("need num_images >= 3, image_size >= 16, seed >= 0, split_seed >= 0 and workers >= 1")
    params = {"generator_version": GENERATOR_VERSION, "num_images": int(num_images),
              "image_size": int(image_size), "seed": int(seed), "splits": [float(s) for s in splits]}
    if split_seed != seed:  # builds with the default split keep their old marker (no rebuild)
        params["split_seed"] = int(split_seed)
    marker = root / ".complete"
    built_with = None
    with contextlib.suppress(OSError, ValueError):
        built_with = json.loads(marker.read_text())
    if built_with == params:
        return _summary(root, params, built=False)
    if _same_images(built_with, params):
        _write_tables(root, _read_rows(root, seed), params, split_seed)  # new split, same pictures
        return _summary(root, params, built=True)
    if root.exists() and not marker.is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and is not a toy dataset; choose another root")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        tmp.chmod(0o755)
        (tmp / "images").mkdir()
        jobs = [(i, seed, image_size, str(tmp / "images")) for i in range(num_images)]
        rows = []
        with tqdm(total=num_images, desc="toy-art images", unit="img", disable=not progress) as bar, \
                multiprocessing.Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for row in pool.imap(_render_row, jobs, chunksize=32) if pool else map(_render_row, jobs):
                rows.append(row)
                bar.update(1)
        _write_tables(tmp, rows, params, split_seed)
        if root.exists():  # empty, or an older toy build with other parameters
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
            os.replace(root, old / "data")
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _summary(root, params, built=True)


def split_indices(num_images: int, split_seed: int, splits=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """``{"train", "val", "test"}`` -> image indices: a permutation seeded by ``split_seed``."""
    order = np.random.default_rng(split_seed).permutation(num_images)
    n_val, n_test = (max(1, round(fraction * num_images)) for fraction in splits[1:])
    n_train = num_images - n_val - n_test  # every split gets at least one image
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def _same_images(built_with: Any, params: dict) -> bool:
    """Whether a build with marker ``built_with`` holds the pictures ``params`` asks for."""
    if not isinstance(built_with, dict):
        return False
    image_keys = ("generator_version", "num_images", "image_size", "seed")
    return all(built_with.get(key) == params[key] for key in image_keys)


def _read_rows(root: Path, seed: int) -> list[dict[str, Any]]:
    """The rows of an existing build from its factors.csv, in image order. Descriptions are
    drawn again from each picture's own stream (the same words), so a re-split never
    depends on split tables that an interrupted re-split may have left half written."""
    with (root / "factors.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    numeric = (*QUALITY_FACTORS, "base_hue", "blur_sigma", "noise_std", "score_noise", "score")
    for row in rows:
        row.update({name: float(row[name]) for name in numeric})
        index = int(Path(row["image"]).stem)
        text_stream = np.random.SeedSequence([seed, index]).spawn(3)[2]
        row["comment"] = _describe(np.random.default_rng(text_stream), row)
    return rows


def _write_tables(root: Path, rows: list[dict[str, Any]], params: dict, split_seed: int) -> None:
    """Assign splits and write the split CSVs, factors.csv, README.txt and, last, ``.complete``.

    On an existing build the marker first says "re-splitting", so a re-split cut short is
    never taken for a finished one: the next call splits again and keeps the images.
    """
    (root / ".complete").write_text(json.dumps({**params, "split_seed": "re-splitting"}))
    parts = split_indices(len(rows), split_seed, params["splits"])
    for split, indices in parts.items():
        for i in indices:
            rows[i]["split"] = split
        split_rows = [{**rows[i], "score": f"{rows[i]['score']:.4f}"} for i in sorted(indices)]
        _write_csv(root / f"{split}_set.csv", ("image", "score", "comment"), split_rows)
    _write_csv(root / "factors.csv", FACTOR_COLUMNS, rows)
    (root / "README.txt").write_text(
        f"Synthetic toy-art dataset (mtpg_aiaa.data.toy, generator version {GENERATOR_VERSION}).\n"
        f"Parameters: {json.dumps(params)} (split_seed {split_seed})\n"
        f"Split sizes: {', '.join(f'{k} {len(v)}' for k, v in parts.items())}\n\n"
        f"{__doc__ or ''}\nNot real art and not real votes: for pipeline tests and quickstarts only.\n")
    (root / ".complete").write_text(json.dumps(params))


def ensure_dataset(data_cfg) -> None:
    """Build the toy set a data config describes (``data=toy``: a ``build`` entry) if it is
    not there yet; other data configs are left alone."""
    build = data_cfg.get("build") if hasattr(data_cfg, "get") else None
    if build:
        make_toy_dataset(data_cfg.root, **dict(build))
