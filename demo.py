"""Score images one at a time (as the official demo does) with any system's weights, and say
which is more aesthetic. The system is read from the weights file (python -m mtpg_aiaa list).

    python demo.py painting1.jpg painting2.jpg --desc1 "..." --desc2 "..."
    python demo.py a.jpg b.jpg --ckpt checkpoints/model_save.pt --json
    python demo.py a.jpg b.jpg --ckpt run/best.safetensors --texts critiques.csv      # CG-IAA, cached critiques
    python demo.py a.jpg b.jpg --ckpt run/best.safetensors --weights DIR --tokenizer DIR   # CG-IAA, generated
    python demo.py a.jpg b.jpg --scorer cgiaa_run/best.safetensors --texts critiques.csv --report out.html

Each image gets the texts its system reads. A description (MTPG-AIAA) comes from --descN, else
a sidecar text file (``a.txt`` or ``a.jpg.txt``), else --texts, else, with --describer DIR (e.g.
GalleryGPT converted by scripts/convert_gallerygpt.py), it is generated with the prompt and
budget of configs/describer/<--describer-config>.yaml. Other texts (CG-IAA's four critiques)
come from --texts CSV (image plus one column per text), else are written by the system's own
generator from --weights DIR [--tokenizer DIR].
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

# Nothing heavy at module level: `demo.py --help` must not wait for torch.
DEFAULT_CKPT = Path("checkpoints/model_save.pt")
DESCRIBER_CONFIGS = Path(__file__).resolve().parent / "configs" / "describer"
DESCRIPTION = "description"  # the named text a describer can write
MISSING_CKPT_HELP = """no checkpoint at {path}.
Pass --ckpt PATH to a weights file: the MTPG-AIAA authors' `model_save.pt` (it already contains
the Long-CLIP-L backbone; put it at checkpoints/model_save.pt to make it the default), or any
system's `best.safetensors` written by train.py. See checkpoints/README.md for the files."""


def registered_systems() -> list[str]:
    from mtpg_aiaa.models.registry import SystemDeclarationError, list_models  # declarations only: no torch

    try:
        return list_models()
    except SystemDeclarationError as error:  # an outside system's broken system.json
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files to score")
    parser.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT, help=f"weights of any system (default {DEFAULT_CKPT})")
    parser.add_argument("--system", choices=registered_systems(),
                        help="refuse weights of another system (default: whatever the file holds)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    texts = parser.add_argument_group("texts the system reads")
    texts.add_argument("--desc1", help="description of the first image")
    texts.add_argument("--desc2", help="description of the second image")
    texts.add_argument("--texts", "--critiques", dest="texts", type=Path,
                       help="CSV or JSON: image plus one column per text (CG-IAA: color,composition,dof,general)")
    texts.add_argument("--describer", type=Path, help="model directory that writes missing descriptions")
    texts.add_argument("--describer-config", default="gallerygpt",
                       help="its prompt and budget: NAME of configs/describer/NAME.yaml, or a YAML file "
                            "(default gallerygpt)")
    texts.add_argument("--weights", type=Path,
                       help="the system's text writer (CG-IAA: folder with base_model.pt and the four experts)")
    texts.add_argument("--tokenizer", help="its tokenizer folder (CG-IAA: GPT-2's; default the cached gpt2)")
    report = parser.add_argument_group("--report: every registered system side by side on one self-contained HTML page")
    report.add_argument("--report", type=Path, help="write the page here (images embedded, nothing fetched)")
    report.add_argument("--scorer", action="append", type=Path, default=[], metavar="FILE",
                        help="another system's weights for the page, besides --ckpt (repeatable; the file names its system)")
    return parser.parse_args(argv)


def known_description(image: Path, given: str | None) -> str | None:
    """``given``, else a sidecar ``IMAGE.txt`` / ``IMAGE.ext.txt``, else ``None``."""
    from mtpg_aiaa.data.text import read_text_file

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


def generate_descriptions(images: list[Path], model_dir: Path, config: str, device) -> list[str]:
    """Describe ``images`` with the model in ``model_dir`` and the describer ``config`` (name or YAML)."""
    import torch
    from omegaconf import OmegaConf

    from mtpg_aiaa.data import load_rgb_image
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


def table_texts(path: Path, images: list[Path], names: list[str]) -> list[dict[str, str]]:
    """Each image's ``names`` texts from ``path`` (image plus a column per name), found by the
    image's path as given, else by its file name when that is unique in the file."""
    from mtpg_aiaa.data import BadInputError
    from mtpg_aiaa.data.named_texts import read_text_file

    columns = {name: read_text_file(path, name) for name in names}
    rows = []
    for image in images:
        row = {}
        for name, by_image in columns.items():
            by_name = [key for key in by_image if Path(key).name == image.name]
            key = str(image) if str(image) in by_image else by_name[0] if len(by_name) == 1 else None
            if key is None:
                raise BadInputError(f"{path}: no {name!r} text for image {str(image)!r}")
            row[name] = by_image[key]
        rows.append(row)
    return rows


def gather_texts(args: argparse.Namespace, model, device) -> tuple[list[dict[str, str]], list[set[str]]]:
    """Per image, ``{text name: text}`` for every text ``model`` reads, and the names generated."""
    from mtpg_aiaa.models.registry import resolve_reference, systems

    names = list(model.text_names)
    texts: list[dict[str, str]] = [{} for _ in args.images]
    generated: list[set[str]] = [set() for _ in args.images]
    if DESCRIPTION in names:
        given = [args.desc1, args.desc2] + [None] * max(0, len(args.images) - 2)
        for row, path, text in zip(texts, args.images, given):
            known = known_description(path, text)
            if known is not None:
                row[DESCRIPTION] = known
    table_names = [name for name in names if name != DESCRIPTION or any(DESCRIPTION not in row for row in texts)]
    if args.texts is not None and table_names:
        for row, found in zip(texts, table_texts(args.texts, args.images, table_names)):
            row.update({name: text for name, text in found.items() if name not in row})
    if DESCRIPTION in names and args.describer is not None:
        missing = [i for i, row in enumerate(texts) if DESCRIPTION not in row]
        if missing:
            written = generate_descriptions([args.images[i] for i in missing], args.describer, args.describer_config, device)
            for i, text in zip(missing, written):
                texts[i][DESCRIPTION], generated[i] = text, generated[i] | {DESCRIPTION}
    others = [name for name in names if name != DESCRIPTION and any(name not in row for row in texts)]
    if others:
        writer = systems()[model.system].generate_texts if model.system in systems() else None
        if writer is None or args.weights is None:
            how = " or --weights DIR [--tokenizer DIR] to have them written" if writer else ""
            raise ValueError(f"{args.ckpt} is a {model.system} model that reads the texts {', '.join(others)}: "
                             f"give --texts FILE (image plus a column per text){how}")  # fmt: skip
        for row, more, done in zip(texts, resolve_reference(writer)(args.images, args.weights, args.tokenizer, device),
                                   generated):  # fmt: skip
            done.update(name for name in others if name not in row)
            row.update({name: more[name] for name in others if name not in row})
    if DESCRIPTION in names:
        for row, path in zip(texts, args.images):
            if DESCRIPTION not in row:
                row[DESCRIPTION] = find_description(path, None)  # "" with a warning
    return texts, generated


def score_images(model, images: list[Path], texts: list[dict[str, str]], device) -> list[dict]:
    """Each image scored alone (a batch of one, as the official demo does), through the scorer
    interface: ``pred`` on the model's range, ``pred_0_10`` mapped linearly onto 0-10, and the distribution if any."""
    import torch

    from mtpg_aiaa.data import load_rgb_image

    transform = model.build_transform()
    labels = getattr(model, "distribution_labels", None) or [f"{v:g}" for v in model.distribution_values or ()]
    results = []
    with torch.inference_mode():
        for path, row in zip(images, texts):
            tokens = model.tokenize({name: [row[name]] for name in model.text_names}) if model.text_names else {}
            batch = {"image": transform(load_rgb_image(path)).unsqueeze(0).to(device),
                     "tokens": {name: value.to(device) for name, value in tokens.items()}}  # fmt: skip
            out = model(batch)
            score = out["score"][0].float()
            result = {"image": str(path), "pred": round(float(score), 4),
                      "pred_0_10": round(float(model.score_range.rescale(score, 0.0, 10.0)), 3)}  # fmt: skip
            if "distribution" in out and labels:
                result["distribution"] = {label: round(float(p), 4) for label, p in zip(labels, out["distribution"][0])}
            result["texts"] = dict(row)
            results.append(result)
    return results


def print_table(model, results: list[dict]) -> None:
    for r in results:
        if r.get("description_generated"):
            print(f"generated description of {Path(r['image']).name}: {r['texts'][DESCRIPTION]}\n")
    labels = list(results[0].get("distribution", {}))
    print(f"scores: pred on {model.system}'s own range ({model.score_range.describe()}); pred_0_10 maps it "
          "linearly onto 0-10 (not a calibration)")
    print(f"{'image':<32} {'pred':>9} {'pred_0_10':>9}  " + " ".join(f"{label:>7}" for label in labels))
    for r in results:
        shown = " ".join(f"{p:7.3f}" for p in r.get("distribution", {}).values())
        print(f"{Path(r['image']).name:<32} {r['pred']:9.4f} {r['pred_0_10']:9.2f}  {shown}")
        for name, text in r["texts"].items():
            if name != DESCRIPTION:
                print(f"  [{name}] {text}")
    if len(results) > 1:
        best = max(results, key=lambda r: r["pred"])
        others = ", ".join(f"{Path(r['image']).name} ({r['pred']:.3f})" for r in results if r is not best)
        print(f"\nmore aesthetic: {Path(best['image']).name} ({best['pred']:.3f}) over {others}")


def report_main(args: argparse.Namespace) -> int:
    """``--report``: each painting's score from every registered system (each on its own range),
    the details behind it (MTPG-AIAA's level probabilities, ...) and the texts it read (the
    description, CG-IAA's critiques) on one page; a system without weights is one line saying
    where to get them. Texts are gathered per system as the one-system path does."""
    from mtpg_aiaa.backbone.convert import CheckpointError
    from mtpg_aiaa.data import BadInputError
    from mtpg_aiaa.device import resolve_device
    from mtpg_aiaa.errors import one_line_message
    from mtpg_aiaa.eval.report import write_report
    from mtpg_aiaa.explain import explain
    from mtpg_aiaa.models.loading import load_model

    files = ([args.ckpt] if args.ckpt.is_file() else []) + list(args.scorer)  # the default file may not be there
    weights: dict[str, Path | None] = {name: None for name in registered_systems()}
    texts: dict[str, dict[str, str]] = {}
    try:
        device = resolve_device(args.device)
        for file in files:
            model = load_model(file, device=device, expect="scorer")
            if weights.get(model.system) is not None:
                raise ValueError(f"{file} and {weights[model.system]} both hold {model.system!r} weights; give one")
            weights[model.system] = file
            rows, _ = gather_texts(args, model, device)
            for path, row in zip(args.images, rows):
                for name, text in row.items():
                    texts.setdefault(name, {})[str(path)] = text
            del model
        write_report(explain(args.images, weights, texts, device=device), args.report)
    except (BadInputError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {one_line_message(error)}", file=sys.stderr)
        return 2
    print(f"wrote {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return report_main(args)
    if not args.ckpt.is_file():
        print(f"error: {MISSING_CKPT_HELP.format(path=args.ckpt)}", file=sys.stderr)
        return 2
    from mtpg_aiaa.backbone.convert import CheckpointError
    from mtpg_aiaa.data import BadInputError
    from mtpg_aiaa.device import resolve_device
    from mtpg_aiaa.errors import one_line_message
    from mtpg_aiaa.models.loading import load_model

    try:
        device = resolve_device(args.device)
        # the system is the file's own; MTPG-AIAA's loader casts the backbone as the authors' on CUDA
        model = load_model(args.ckpt, device=device, expect="scorer",
                           backbone_precision="fp16" if device.type == "cuda" else "fp32")
        if args.system is not None and model.system != args.system:
            raise ValueError(f"{args.ckpt} holds a {model.system!r} model, not {args.system!r} (--system)")
        texts, generated = gather_texts(args, model, device)
        results = score_images(model, args.images, texts, device)
    except (BadInputError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {one_line_message(error)}", file=sys.stderr)
        return 2
    for result, names in zip(results, generated):
        if DESCRIPTION in model.text_names:  # as before: whether a description was given or written
            result["description_given"] = bool(result["texts"][DESCRIPTION])
            result["description_generated"] = DESCRIPTION in names
            if DESCRIPTION in names:
                result["description"] = result["texts"][DESCRIPTION]
        if names - {DESCRIPTION}:
            result["texts_generated"] = sorted(names)
    best = max(results, key=lambda r: r["pred"])
    if args.json:
        print(json.dumps({"checkpoint": str(args.ckpt), "system": model.system,
                          "score_range": [model.score_range.low, model.score_range.high],
                          "results": results, "most_aesthetic": best["image"]}, indent=2))  # fmt: skip
        return 0
    print_table(model, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
