"""Every system's score of each painting, with what stands behind it.

    from mtpg_aiaa.explain import explain
    entries = explain(["a.jpg", "b.jpg"], {"mtpg": "checkpoints/model_save.pt", "cgiaa": None},
                      texts={"description": {"a.jpg": "An oil painting ..."},
                             "color": {...}, "composition": {...}, "dof": {...}, "general": {...}})
    mtpg_aiaa.eval.report.write_report(entries, "report.html")

Each system is loaded from its file through ``models.loading.load_model`` (never by name),
each image scored alone (a batch of one, as the demos do, so systems whose outputs depend on
the batch give the same number for the same painting), and the numbers behind each score come
from ``Scorer.describe_outputs`` (MTPG-AIAA's five level probabilities). The texts a system
reads (MTPG-AIAA's description, CG-IAA's four critiques) are returned with its score.

An entry is a plain dict::

    {"image": "a.jpg",
     "systems": [{"system": "mtpg", "weights": "...", "pred": 0.61, "range": [0.0, 1.0],
                  "higher_is_better": True, "pred_0_10": 6.1,
                  "details": {"aesthetic levels": {"bad": 0.02, ...}},
                  "texts": {"description": "An oil painting ..."}, "notes": []},
                 {"system": "cgiaa", "unavailable": "no weights given: ..."}]}
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .backbone.convert import CheckpointError
from .data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from .models.base import Scorer
from .models.loading import load_model
from .models.registry import get_model_entry

# MTPG-AIAA reads a description; without one it is scored with an empty text (its demo's rule).
DESCRIPTION = "description"
TextSource = Sequence[str] | Mapping[str, str]


def explain(images: Sequence[str | Path], weights: Mapping[str, str | Path | None],
            texts: Mapping[str, TextSource] | None = None, device: str | torch.device = "cpu",
            max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict[str, Any]]:  # fmt: skip
    """Per image, each system's score on its own range, its details and the texts it read.

    Args:
        images: image files.
        weights: ``{system: weights file or None}``; None (the user has none) becomes one line
            per painting saying where to get them (the registry's ``weights_help``).
        texts: ``{text name: list aligned with images | {path or file name: text}}``.
        device: where the models run.
    Returns:
        One dict per image (see the module docstring), systems in the order of ``weights``.
    Raises:
        CheckpointError: a weights file that cannot be loaded, or that holds another system.
        BadInputError: an unreadable image, or a text table without a row for an image.
    """
    paths = [Path(image) for image in images]
    device = torch.device(device)
    entries: list[dict[str, Any]] = [{"image": str(path), "systems": []} for path in paths]
    for system, path in weights.items():
        if path is None:
            line = unavailable_line(system)
            for entry in entries:
                entry["systems"].append({"system": system, "unavailable": line})
            continue
        model = load_model(path, device=device)
        if model.system != system:
            raise CheckpointError(f"{path} holds a {model.system!r} model, not {system!r}")
        for index, (entry, image_path) in enumerate(zip(entries, paths)):
            row_texts, missing = texts_for(model, image_path, index, texts or {})
            if missing:
                line = f"not scored: no {', '.join(missing)} text given for this image"
                entry["systems"].append({"system": system, "weights": str(path), "unavailable": line})
                continue
            result = score_one(model, image_path, row_texts, device, max_pixels)
            entry["systems"].append(result | {"weights": str(path)})
        del model
    return entries


def unavailable_line(system: str) -> str:
    """One line for a system whose weights were not given: where to get them."""
    help_line = get_model_entry(system).weights_help or "see checkpoints/README.md"
    return f"no weights given; {help_line}"


def texts_for(model: Scorer, image: Path, index: int,
              texts: Mapping[str, TextSource]) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    """The texts ``model`` reads for one image, and the names of those not given."""
    found, missing = {}, []
    for name in model.text_names:
        source = texts.get(name)
        text = None
        if isinstance(source, Mapping):
            text = source.get(str(image), source.get(image.name))
        elif source is not None and index < len(source):
            text = source[index]
        if text is None and name == DESCRIPTION:
            text = ""
        if text is None:
            missing.append(name)
        else:
            found[name] = str(text)
    return found, missing


@torch.inference_mode()
def score_one(model: Scorer, image: Path, texts: dict[str, str], device: torch.device,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:  # fmt: skip
    """One painting through one system (a batch of one): score, range, details, texts."""
    pixels = model.build_transform(train=False)(load_rgb_image(image, max_pixels=max_pixels)).unsqueeze(0)
    batch: dict[str, Any] = {"image": pixels.to(device)}
    if model.text_names:
        tokens = model.tokenize({name: [texts[name]] for name in model.text_names})
        batch["tokens"] = {name: value.to(device) for name, value in tokens.items()}
    outputs = model(batch)
    score = float(outputs["score"][0])
    score_range = model.score_range
    notes = [f"no {DESCRIPTION} given: scored with an empty one"] if texts.get(DESCRIPTION) == "" else []
    if not score_range.low <= score <= score_range.high:  # an unbounded head (CG-IAA's scalar one) can leave it
        notes.append(f"this score lies outside the system's stated range {score_range.low:g}-{score_range.high:g}")
    return {
        "system": model.system,
        "pred": score,  # on the system's own range; one name per scale, as in predictions.csv
        "range": [score_range.low, score_range.high],
        "higher_is_better": score_range.higher_is_better,
        "pred_0_10": float(score_range.rescale(torch.tensor(score, dtype=torch.float64), 0.0, 10.0)),
        "details": model.describe_outputs(outputs)[0],
        "texts": dict(texts),
        "notes": notes,
    }
