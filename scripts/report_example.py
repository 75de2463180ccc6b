"""The example report page of docs/explain.md, on tiny RANDOM models (its numbers mean nothing).

    python scripts/report_example.py --out outputs/report_example [--screenshot docs/figures/report.png]

Two toy-set pictures (``data/toy.py``) with their generated descriptions and the toy set's
template critiques (``models/cgiaa/toy_critiques.py``) are scored by a randomly initialised
LongCLIP-tiny MTPG-AIAA and CG-IAA scorer; AesNet has no weights, so its column is the line
that says where to get them. ``demo.py --report`` writes the page; ``--screenshot`` renders it
with headless Chromium.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from a checkout

from mtpg_aiaa.data.toy import generate_toy_sample  # noqa: E402
from mtpg_aiaa.models.cgiaa.generator import ATTRIBUTES  # noqa: E402
from mtpg_aiaa.models.cgiaa.toy_critiques import toy_critiques  # noqa: E402
from mtpg_aiaa.models.registry import create_model  # noqa: E402

TOY_PICTURES = (7, 12)  # two toy-set indices (seed 0): a weak and a strong one


def build_inputs(out: Path) -> list[str]:
    """Pictures + sidecar descriptions + critique CSV + tiny random weights; the demo's arguments."""
    out.mkdir(parents=True, exist_ok=True)
    images, critiques = [], []
    for index in TOY_PICTURES:
        sample = generate_toy_sample(index, seed=0, image_size=256)
        path = out / f"toy_{index}.png"
        Image.fromarray(sample.image).save(path)
        path.with_suffix(".txt").write_text(sample.description)
        images.append(path)
        critiques.append(toy_critiques({**sample.factors, "score": sample.score}))
    with open(out / "critiques.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *ATTRIBUTES])
        writer.writerows([path.name, *(row[a] for a in ATTRIBUTES)] for path, row in zip(images, critiques))
    torch.manual_seed(0)
    mtpg = create_model("mtpg", backbone="LongCLIP-tiny", fusion="token", fusion_heads=4, prompts="clean")
    cgiaa = create_model("cgiaa", clip="LongCLIP-tiny", bins=10)
    return [*map(str, images), "--ckpt", str(mtpg.save(out / "tiny_random_mtpg.safetensors")),
            "--scorer", str(cgiaa.save(out / "tiny_random_cgiaa.safetensors")),
            "--critiques", str(out / "critiques.csv"), "--report", str(out / "report.html")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/report_example"))
    parser.add_argument("--screenshot", type=Path, help="also render the page to this PNG with headless Chromium")
    args = parser.parse_args(argv)
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", Path(__file__).resolve().parents[1] / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    code = demo.main(build_inputs(args.out))
    if code or args.screenshot is None:
        return code
    found = [shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")]
    browser = next((path for path in found if path), None)
    if browser is None:
        print("error: no chromium binary for --screenshot (apt-get install chromium)", file=sys.stderr)
        return 2
    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1500",
                    f"--screenshot={args.screenshot.resolve()}", (args.out / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
