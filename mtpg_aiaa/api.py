"""Score images with any registered system and local weights, from Python.

    import mtpg_aiaa
    scorer = mtpg_aiaa.create_scorer("mtpg", weights="checkpoints/model_save.pt")
    result = scorer.score(["a.jpg", "b.jpg"], descriptions=["An oil painting ...", "..."])
    result.scores, result.score_range      # [0.61, 0.48], ScoreRange(low=0.0, high=1.0, ...)

Weights are only read from local files (never downloaded); bad images raise a one-line
error naming the file, or are skipped and counted with ``on_bad_image="skip"``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .backbone.convert import CheckpointError
from .data.errors import BadInputError
from .data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from .models.base import Scorer, ScoreRange
from .predictions import distribution_columns

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TextsArg = Mapping[str, Sequence[str] | Mapping[str, str]]


@dataclass
class ScoreResult:
    """Scores of the images that could be read, in input order, and those that could not.

    ``scores`` lie on ``score_range``; ``distributions`` (one list per image) when the
    system predicts one, over ``distribution_columns``.
    """

    images: list[str]
    scores: list[float]
    score_range: ScoreRange
    distributions: list[list[float]] | None = None
    distribution_columns: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """``image, score, score_0_10`` and the distribution columns."""
        scores = torch.tensor(self.scores, dtype=torch.float64)
        frame = pd.DataFrame({"image": self.images, "score": self.scores,
                              "score_0_10": self.score_range.rescale(scores, 0.0, 10.0).tolist()})  # fmt: skip
        if self.distributions is not None:
            for k, column in enumerate(self.distribution_columns):
                frame[column] = [row[k] for row in self.distributions]
        return frame


def expand_images(inputs: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given, folders replaced by their image files (sorted by name)."""
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            paths.extend(sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(item)  # a missing file is reported (or skipped) when it is read
    return paths


class ImageScorer:
    """A loaded ``Scorer`` plus the loop that feeds it images and texts (``create_scorer``)."""

    def __init__(self, model: Scorer, device: torch.device, batch_size: int = 16):
        self.model, self.device, self.batch_size = model.eval(), device, batch_size

    @property
    def score_range(self) -> ScoreRange:
        return self.model.score_range

    @torch.inference_mode()
    def score(self, images: Sequence[str | Path], descriptions: Sequence[str] | Mapping[str, str] | None = None,
              texts: TextsArg | None = None, on_bad_image: str = "error", progress: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> ScoreResult:  # fmt: skip
        """Score image files (folders are expanded).

        Args:
            descriptions: MTPG-AIAA's ``description`` per image: a list aligned with the
                expanded images, or ``{file name or path: text}``.
            texts: any named texts the system reads, each as ``descriptions``.
            on_bad_image: ``error`` (raise naming the file) or ``skip`` (counted in ``skipped``).
        """
        if on_bad_image not in ("error", "skip"):
            raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        paths = expand_images(images)
        named = dict(texts or {})
        if descriptions is not None:
            named["description"] = descriptions
        if "description" in self.model.text_names and "description" not in named:
            log.warning("no descriptions given: every image is scored with an empty one")
        per_image = [self._texts_of(path, i, named) for i, path in enumerate(paths)]
        # A batch-dependent model (MTPG's released fusion) scores every image alone, as its demo does.
        batch_size = 1 if self.model.outputs_depend_on_batch else self.batch_size
        transform = self.model.build_transform(train=False)
        kept, scores, distributions, skipped = [], [], [], []
        bar = tqdm(total=len(paths), desc="scoring", unit="img", disable=not progress, dynamic_ncols=True)
        with bar:
            for start in range(0, len(paths), batch_size):
                pixels, batch_texts, names = [], [], []
                for path, row_texts in zip(paths[start : start + batch_size], per_image[start : start + batch_size]):
                    try:
                        pixels.append(transform(load_rgb_image(path, max_pixels=max_pixels)))
                    except BadInputError as error:
                        if on_bad_image == "error":
                            raise
                        skipped.append({"image": str(path), "reason": str(error)})
                        continue
                    batch_texts.append(row_texts)
                    names.append(str(path))
                bar.update(min(batch_size, len(paths) - start))
                if not names:
                    continue
                outputs = self.model(self._batch(pixels, batch_texts))
                kept.extend(names)
                scores.extend(outputs["score"].float().cpu().tolist())
                if "distribution" in outputs:
                    distributions.extend(outputs["distribution"].float().cpu().tolist())
        if skipped:
            log.warning("skipped %d unreadable image(s), first: %s", len(skipped), skipped[0]["reason"])
        columns = distribution_columns(self.model, len(distributions[0])) if distributions else []
        return ScoreResult(kept, scores, self.model.score_range, distributions or None, columns, skipped)

    def _texts_of(self, path: Path, index: int, named: Mapping[str, Any]) -> dict[str, str]:
        row: dict[str, str] = {}
        for name in self.model.text_names:
            source = named.get(name)
            if source is None:
                if name == "description":
                    row[name] = ""  # MTPG-AIAA without a description: scored with an empty one (logged once)
                    continue
                raise ValueError(f"model {self.model.system!r} reads a {name!r} text per image; pass texts={{{name!r}: ...}}")
            if isinstance(source, Mapping):
                text = source.get(str(path), source.get(path.name))
                if text is None:
                    raise BadInputError(f"no {name!r} text for image {path} (looked up by path and by file name)")
                row[name] = text
            else:
                if index >= len(source):
                    raise ValueError(f"{len(source)} {name!r} text(s) for more images; pass one per image or a mapping")
                row[name] = source[index]
        return row

    def _batch(self, pixels: list[torch.Tensor], texts: list[dict[str, str]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"image": torch.stack(pixels).to(self.device)}
        if self.model.text_names:
            tokens = self.model.tokenize({name: [row[name] for row in texts] for name in self.model.text_names})
            batch["tokens"] = {name: value.to(self.device) for name, value in tokens.items()}
        return batch


def resolve_weights(weights: str | Path | None, name: str) -> Path:
    """A local weights file, or a one-line error saying where to put it."""
    if weights is None:
        raise CheckpointError(f"create_scorer({name!r}) needs weights=PATH to a local file; weights are never "
                              "downloaded (checkpoints/README.md lists the files and where to get them)")  # fmt: skip
    text = str(weights)
    if "://" in text:
        raise CheckpointError(f"weights={text} is a URL; weights are only read from local files: download it "
                              "into checkpoints/ (checkpoints/README.md) and pass that path")  # fmt: skip
    path = Path(text).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found; weights are never downloaded: put the file there "
                              "(e.g. the MTPG-AIAA release as checkpoints/model_save.pt, checkpoints/README.md)")  # fmt: skip
    return path


def create_scorer(name: str, weights: str | Path | None = None, device: str = "auto", batch_size: int = 16,
                  **load_options: Any) -> ImageScorer:  # fmt: skip
    """An ``ImageScorer`` for system ``name`` (``mtpg_aiaa.list_models()``) with local ``weights``.

    The file's own system (read from its content) must be ``name``; ``load_options`` go to
    the system's loader (MTPG: ``backbone_precision="fp16"``).
    """
    from .models.loading import load_model
    from .models.registry import get_model_entry

    get_model_entry(name)  # unknown names fail here, listing the registered ones
    path = resolve_weights(weights, name)
    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            "cpu" if device == "auto" else device)  # fmt: skip
    model = load_model(path, device=resolved, expect="scorer", **load_options)
    if model.system != name:
        raise CheckpointError(f"{path} holds a {model.system!r} model, not {name!r}; "
                              f"use create_scorer({model.system!r}, weights=...)")  # fmt: skip
    return ImageScorer(model, resolved, batch_size)
