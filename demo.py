"""Score paintings one at a time (as the official demo does) and say which is more aesthetic.

    python demo.py painting1.jpg painting2.jpg --desc1 "..." --desc2 "..."
    python demo.py a.jpg b.jpg --ckpt checkpoints/model_save.pt --json
    python demo.py a.jpg b.jpg --system cgiaa --ckpt run/best.safetensors --critiques critiques.csv
    python demo.py a.jpg b.jpg --system cgiaa --ckpt run/best.safetensors --weights DIR --tokenizer DIR
    python demo.py a.jpg b.jpg --scorer cgiaa=run/best.safetensors --critiques critiques.csv --report out.html

A description comes from --descN, else from a sidecar text file (``a.txt`` or ``a.jpg.txt``),
else, with --describer DIR (e.g. GalleryGPT converted by scripts/convert_gallerygpt.py), it is
generated with the prompt and budget of configs/describer/<--describer-config>.yaml.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from mtpg_aiaa.models.mtpg.checkpoint import load_model
from mtpg_aiaa.data import BadInputError, load_rgb_image
from mtpg_aiaa.data.text import read_text_file
from mtpg_aiaa.device import resolve_device
from mtpg_aiaa.models.mtpg.prompts import LEVELS

DEFAULT_CKPT = Path("checkpoints/model_save.pt")
DESCRIBER_CONFIGS = Path(__file__).resolve().parent / "configs" / "describer"
MISSING_CKPT_HELP = """no checkpoint at {path}.
MTPG-AIAA needs trained weights. Either:
  - download the authors' released checkpoint `model_save.pt` (it already contains the
    Long-CLIP-L backbone) from the MTPG-AIAA release and put it at checkpoints/model_save.pt,
  - or pass --ckpt PATH to one of our checkpoints (`*.safetensors` written by train.py).
See checkpoints/README.md for the expected files."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files to score")
    parser.add_argument("--desc1", help="description of the first image")
    parser.add_argument("--desc2", help="description of the second image")
    parser.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT, help=f"weights (default {DEFAULT_CKPT})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--describer", type=Path, help="model directory that writes missing descriptions")
    parser.add_argument("--describer-config", default="gallerygpt",
                        help="its prompt and budget: NAME of configs/describer/NAME.yaml, or a YAML file "
                             "(default gallerygpt)")
    cgiaa = parser.add_argument_group("CG-IAA (--system cgiaa): the scorer's critiques, cached or generated")
    cgiaa.add_argument("--system", default="mtpg", choices=("mtpg", "cgiaa"), help="the system of --ckpt")
    cgiaa.add_argument("--critiques", type=Path, help="critique cache CSV (image,color,composition,dof,general)")
    cgiaa.add_argument("--weights", type=Path, help="folder with base_model.pt and the four released experts")
    cgiaa.add_argument("--tokenizer", help="GPT-2 tokenizer folder (with --weights)")
    report = parser.add_argument_group("--report: every registered system on one self-contained HTML page")
    report.add_argument("--report", type=Path, help="write the page here (images embedded, nothing fetched)")
    report.add_argument("--scorer", action="append", default=[], metavar="SYSTEM=FILE",
                        help="another system's weights for the page, besides --ckpt (repeatable)")
    return parser.parse_args(argv)


def known_description(image: Path, given: str | None) -> str | None:
    """``given``, else a sidecar ``IMAGE.txt`` / ``IMAGE.ext.txt``, else ``None``."""
    if given is not None:
        return given
    for sidecar in (image.with_suffix(".txt"), image.with_name(image.name + ".txt")):
        if sidecar.is_file():
            return read_text_file(sidecar).strip()
    return None


def find_description(image: Path, given: str | None) -> str:
    """:func:`known_description`, else ``""`` with a warning."""
    known = known_description(image, given)
    if known is not None:
        return known
    warnings.warn(f"no description for {image} (no --desc, no {image.with_suffix('.txt').name}); using an empty one")
    return ""


def generate_descriptions(images: list[Path], model_dir: Path, config: str, device: torch.device) -> list[str]:
    """Describe ``images`` with the model in ``model_dir`` and the describer ``config`` (name or YAML)."""
    from omegaconf import OmegaConf

    from mtpg_aiaa.describe import DescriberSettings, load_describer

    config_path = Path(config) if config.endswith((".yaml", ".yml")) else DESCRIBER_CONFIGS / f"{config}.yaml"
    if not config_path.is_file():
        raise ValueError(f"no describer config {config_path}; choose one of "
                         f"{sorted(p.stem for p in DESCRIBER_CONFIGS.glob('*.yaml'))}")  # fmt: skip
    values = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    settings = DescriberSettings.from_config({**values, "model_path": str(model_dir), "device": str(device)})
    describer = load_describer(settings, device)
    texts = [generation.text for generation in describer.describe([load_rgb_image(path) for path in images])]
    del describer
    if device.type == "cuda":
        torch.cuda.empty_cache()  # room for the scoring model
    return texts


@torch.inference_mode()
def score_images(model, images: list[Path], descriptions: list[str], device: torch.device) -> list[dict]:
    """Each image scored alone (batch of one), as the official demo does."""
    transform = model.build_transform()
    results = []
    for image_path, description in zip(images, descriptions):
        pixels = transform(load_rgb_image(image_path)).unsqueeze(0).to(device)
        tokens = model.tokenizer([description]).to(device)
        out = model(pixels, tokens)
        probs = out["probs"][0].float().cpu()
        results.append(
            {
                "image": str(image_path),
                "score": round(float(out["score"][0]), 4),
                "score_10": round(float(out["score"][0]) * 10, 3),
                "levels": {level: round(float(p), 4) for level, p in zip(LEVELS, probs)},
                "description_given": bool(description),
            }
        )
    return results


def cgiaa_main(args: argparse.Namespace) -> int:
    """``--system cgiaa``: each image's MAP score and the four critiques it was scored with."""
    from mtpg_aiaa.models.cgiaa import load_generator, load_gpt2_tokenizer
    from mtpg_aiaa.models.cgiaa.explain import cached_critiques, generated_critiques, score_with_critiques
    from mtpg_aiaa.models.loading import load_model as load_any_model

    if (args.critiques is None) == (args.weights is None):
        print("error: --system cgiaa needs exactly one of --critiques CSV or --weights DIR --tokenizer DIR", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        scorer = load_any_model(args.ckpt, device=device)
        if scorer.system != "cgiaa":
            raise ValueError(f"{args.ckpt} holds a {scorer.system!r} model, not a CG-IAA scorer")
        if args.critiques is not None:
            critiques = cached_critiques(args.critiques, args.images, scorer.text_names)
        else:
            generator = load_generator(args.weights, load_gpt2_tokenizer(args.tokenizer or "gpt2"), device=device)
            critiques = generated_critiques(generator, args.images, device)
        results = score_with_critiques(scorer, args.images, critiques, device)
    except (BadInputError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = max(results, key=lambda r: r["score"])
    if args.json:
        print(json.dumps({"checkpoint": str(args.ckpt), "results": results, "most_aesthetic": best["image"]}, indent=2))
        return 0
    low, high = scorer.score_range.low, scorer.score_range.high
    for r in results:
        print(f"== {Path(r['image']).name}: score {r['score']:.4f} (range {low:g}-{high:g})")
        for name, text in r["critiques"].items():
            print(f"  [{name}] {text}")
    if len(results) > 1:
        others = ", ".join(f"{Path(r['image']).name} ({r['score']:.3f})" for r in results if r is not best)
        print(f"\nmore aesthetic: {Path(best['image']).name} ({best['score']:.3f}) over {others}")
    return 0


def report_main(args: argparse.Namespace) -> int:
    """``--report``: each painting's score from every registered system (their own ranges),
    MTPG-AIAA's level probabilities and description, CG-IAA's critiques, on one page; a
    system without weights is one line saying where to get them."""
    from mtpg_aiaa.eval.report import write_report
    from mtpg_aiaa.explain import explain
    from mtpg_aiaa.models.cgiaa import load_generator, load_gpt2_tokenizer
    from mtpg_aiaa.models.cgiaa.explain import cached_critiques, generated_critiques
    from mtpg_aiaa.models.cgiaa.generator import ATTRIBUTES
    from mtpg_aiaa.models.registry import list_models

    weights: dict[str, Path | None] = {name: None for name in list_models()}
    if args.ckpt != DEFAULT_CKPT or args.ckpt.is_file():  # the default file may simply not be there
        weights[args.system] = args.ckpt
    for item in args.scorer:
        system, _, path = item.partition("=")
        if system not in weights or not path:
            print(f"error: --scorer {item}: use SYSTEM=FILE with SYSTEM one of {', '.join(weights)}", file=sys.stderr)
            return 2
        weights[system] = Path(path)
    given = [args.desc1, args.desc2] + [None] * max(0, len(args.images) - 2)
    try:
        device = resolve_device(args.device)
        known = {str(path): text for path, text in ((p, known_description(p, g)) for p, g in zip(args.images, given))
                 if text is not None}  # fmt: skip
        missing = [path for path in args.images if str(path) not in known]
        if args.describer is not None and missing:
            generated = generate_descriptions(missing, args.describer, args.describer_config, device)
            known.update(zip(map(str, missing), generated))
        texts: dict[str, dict[str, str]] = {"description": known}
        if args.critiques is not None:
            rows = cached_critiques(args.critiques, args.images, ATTRIBUTES)
        elif args.weights is not None and weights.get("cgiaa") is not None:
            generator = load_generator(args.weights, load_gpt2_tokenizer(args.tokenizer or "gpt2"), device=device)
            rows = generated_critiques(generator, args.images, device)
            del generator
        else:
            rows = []
        for path, row in zip(args.images, rows):
            for name, text in row.items():
                texts.setdefault(name, {})[str(path)] = text
        entries = explain(args.images, weights, texts, device=device)
        write_report(entries, args.report)
    except (BadInputError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return report_main(args)
    if args.system == "cgiaa":
        if not args.ckpt.is_file():
            print(f"error: no CG-IAA scorer at {args.ckpt} (--ckpt: a train.py task=cgiaa/score best.safetensors)",
                  file=sys.stderr)  # fmt: skip
            return 2
        return cgiaa_main(args)
    if not args.ckpt.is_file():
        print(f"error: {MISSING_CKPT_HELP.format(path=args.ckpt)}", file=sys.stderr)
        return 2
    given = [args.desc1, args.desc2] + [None] * max(0, len(args.images) - 2)
    try:
        device = resolve_device(args.device)
        known = [known_description(path, text) for path, text in zip(args.images, given)]
        generated: dict[Path, str] = {}
        if args.describer is not None and None in known:
            missing = [path for path, text in zip(args.images, known) if text is None]
            texts = generate_descriptions(missing, args.describer, args.describer_config, device)
            generated = dict(zip(missing, texts))
        descriptions = [generated[path] if path in generated else find_description(path, text)
                        for path, text in zip(args.images, known)]  # fmt: skip
        model = load_model(args.ckpt, device=device, backbone_precision="fp16" if device.type == "cuda" else "fp32")
        results = score_images(model, args.images, descriptions, device)
        for row, path in zip(results, args.images):
            row["description_generated"] = path in generated
            if path in generated:
                row["description"] = generated[path]
    except (BadInputError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = max(results, key=lambda r: r["score"])
    if args.json:
        print(json.dumps({"checkpoint": str(args.ckpt), "results": results, "most_aesthetic": best["image"]}, indent=2))
        return 0
    for r in results:
        if r["description_generated"]:
            print(f"generated description of {Path(r['image']).name}: {r['description']}\n")
    header = f"{'image':<32} {'score 0-1':>9} {'0-10':>6}  " + " ".join(f"{lv:>7}" for lv in LEVELS)
    print(header)
    for r in results:
        levels = " ".join(f"{p:7.3f}" for p in r["levels"].values())
        print(f"{Path(r['image']).name:<32} {r['score']:9.4f} {r['score_10']:6.2f}  {levels}")
    if len(results) > 1:
        others = ", ".join(f"{Path(r['image']).name} ({r['score']:.3f})" for r in results if r is not best)
        print(f"\nmore aesthetic: {Path(best['image']).name} ({best['score']:.3f}) over {others}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
