"""Score images with any registered system and local weights, from Python.

    import mtpg_aiaa
    scorer = mtpg_aiaa.create_scorer("mtpg", weights="checkpoints/model_save.pt")
    scorer("painting.jpg", descriptions=["An oil painting ..."])   # tensor([0.61])
    scorer(["a.jpg", "folder/"], descriptions={"a.jpg": "...", "b.jpg": "..."})
    scorer(pixels)                     # [3, H, W] or [B, 3, H, W] in 0-1, or a PIL.Image
    result = scorer.score("folder/", on_bad_image="skip")   # ScoreResult: images, scores, skipped
    scorer.score_range, scorer.lower_better                 # ScoreRange(0.0, 1.0, ...), False

    loss_fn = mtpg_aiaa.create_scorer("mtpg", weights=..., as_loss=True)
    (-loss_fn(pixels).mean()).backward()   # gradients reach the pixels

Weights are only read from local files (never downloaded); bad images raise a one-line
error naming the file, or are skipped and counted with ``on_bad_image="skip"``. Files and PIL
images go through the system's own preprocessing and ``eval.predict`` (the loop ``test.py``
uses); tensors through its differentiable version (``transforms.tensor_transform``: within
``TENSOR_PATH_TOLERANCE`` of the file path on the 0-1 scale, tested in tests/test_scorers.py).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from .data.dataset import AestheticsDataset, collate_samples
from .data.errors import BadInputError
from .data.image_files import IMAGE_SUFFIXES, list_image_files
from .data.images import DEFAULT_MAX_PIXELS
from .errors import CheckpointError, SettingError
from .eval.predict import predict
from .eval.predictions import distribution_columns
from .models.base import Scorer, ScoreRange

log = logging.getLogger(__name__)
# Bound on the difference, on the 0-1 scale, between a tensor's score and its file's (PIL's uint8
# resampling against float resampling of the same pixels): at most 0.0009 measured with tiny
# random MTPG-AIAA models on noise images (token and official fusion); tests/test_scorers.py checks it.
TENSOR_PATH_TOLERANCE = 0.01
MISSING_DESCRIPTIONS = ("no descriptions given: MTPG-AIAA reads a description with every image and was trained "
                        "with them, so each image is scored with an empty one and the scores lose what the text "
                        "adds; write descriptions with scripts/describe.py (docs/descriptions.md) and pass them "
                        "(descriptions=... in Python, --descriptions FILE on the command line)")  # fmt: skip
ImageInput = str | Path | Image.Image | torch.Tensor
TextSource = Sequence[str] | Mapping[str, str]


@dataclass
class ScoreResult:
    """Scores of the images that could be read, in input order, and those that could not.

    ``scores`` lie on ``score_range`` (held inside it when ``score_range.bounded``);
    ``distributions`` (one list per image) when the system predicts one, over
    ``distribution_columns``.
    """

    images: list[str]
    scores: list[float]
    score_range: ScoreRange
    distributions: list[list[float]] | None = None
    distribution_columns: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """``image``, ``pred`` (the score on ``score_range``), ``pred_0_10`` (the same mapped onto
        0-10) and the distribution columns: the names of ``eval/predictions.py``."""
        scores = torch.tensor(self.scores, dtype=torch.float64)
        frame = pd.DataFrame({"image": self.images, "pred": self.scores,
                              "pred_0_10": self.score_range.rescale(scores, 0.0, 10.0).tolist()})  # fmt: skip
        if self.distributions is not None:
            for k, column in enumerate(self.distribution_columns):
                frame[column] = [row[k] for row in self.distributions]
        return frame


def expand_inputs(inputs: ImageInput | Sequence[ImageInput], recursive: bool = False,
                  refused: list[dict[str, str]] | None = None) -> list[tuple[str | Image.Image, str]]:  # fmt: skip
    """``(image, name)`` per input: a path string stays one path (never its characters), a
    folder becomes its image files sorted by name, each named by its path relative to the
    folder (``a/x.jpg`` with ``recursive``); files keep the name given; PIL images are named
    ``<image i>``. Tensors are not expanded here (``ImageScorer`` scores them directly).

    Entries of a folder that have an image suffix but are no readable file (a dangling symlink,
    a symlink loop, a FIFO, a device) are never opened: they go to ``refused`` as
    ``{"image", "reason"}`` when a list is given, else raise ``BadInputError`` naming the first."""
    items = [inputs] if isinstance(inputs, (str, Path, Image.Image)) else list(inputs)
    expanded: list[tuple[str | Image.Image, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            expanded.append((item, f"<image {i}>"))
            continue
        if not isinstance(item, (str, Path)):
            raise BadInputError(f"input {i} is a {type(item).__name__}; pass paths, folders, PIL images or tensors")
        path = Path(item)
        if path.is_dir():
            files, not_files = list_image_files(path, recursive=recursive, suffixes=IMAGE_SUFFIXES)
            if not_files and refused is None:
                entry, reason = not_files[0]
                raise BadInputError(f"{entry} is not an image file: {reason} ({len(not_files)} such entries in {path})")
            if refused is not None:
                refused.extend({"image": str(entry), "reason": f"not an image file: {reason}"} for entry, reason in not_files)
            expanded.extend((str(p), p.relative_to(path).as_posix()) for p in files)
        else:
            expanded.append((str(path), str(item)))  # a missing file is reported (or skipped) when it is read
    return expanded


def expand_images(inputs: str | Path | Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given, folders replaced by their image files (sorted by name)."""
    # entries that are no image file are left out here: ``score`` lists or refuses them
    return [Path(image) for image, _ in expand_inputs(inputs, recursive, refused=[]) if not isinstance(image, Image.Image)]


def texts_per_image(names: list[str], paths: list[str], named: Mapping[str, TextSource | None],
                    text_names: Sequence[str]) -> dict[str, list[str]]:  # fmt: skip
    """One text per image for each of ``text_names``. A source is a list aligned with the
    images or ``{key: text}`` looked up by the full path, then the name relative to its folder,
    then the bare file name; a file name that two images share is ambiguous and refused."""
    by_file_name: dict[str, list[str]] = {}
    for path in paths:
        by_file_name.setdefault(Path(path).name, []).append(path)
    texts: dict[str, list[str]] = {}
    for text_name in text_names:
        source = named.get(text_name)
        if source is None:
            if text_name == "description":  # MTPG-AIAA scores without one (logged by the caller)
                texts[text_name] = [""] * len(paths)
                continue
            raise SettingError(f"this model reads a {text_name!r} text per image; pass texts={{{text_name!r}: ...}} "
                               f"in Python or --texts FILE with a {text_name!r} column on the command line")  # fmt: skip
        if isinstance(source, str):
            raise SettingError(f"{text_name} is one string; pass one text per image (a list) or a mapping "
                               "{image: text}, so no image is scored with another's text")  # fmt: skip
        if isinstance(source, Mapping):
            texts[text_name] = [_look_up(source, text_name, name, path, by_file_name) for name, path in zip(names, paths)]
        else:
            if len(source) != len(paths):
                raise SettingError(f"{len(source)} {text_name!r} text(s) for {len(paths)} image(s); pass one per "
                                   "image or a mapping {image: text}")  # fmt: skip
            texts[text_name] = [str(text) for text in source]
    return texts


def _look_up(source: Mapping[str, str], text_name: str, name: str, path: str, by_file_name: dict[str, list[str]]) -> str:
    for key in (path, name):
        if key in source:
            return source[key]
    file_name = Path(path).name
    if file_name in source:
        sharing = by_file_name[file_name]
        if len(sharing) > 1:
            raise BadInputError(f"{sharing[0]} and {sharing[1]} share the file name {file_name}: key the "
                                f"{text_name!r} texts by path relative to the folder (e.g. {name})")  # fmt: skip
        return source[file_name]
    raise BadInputError(f"no {text_name!r} text for image {path} (looked up by path and by file name)")


class _Images(AestheticsDataset):
    """An ``AestheticsDataset`` whose rows may also be PIL images held in memory."""

    def __init__(self, table: pd.DataFrame, in_memory: dict[str, Image.Image], **options: Any):
        # The user named each file (no table under an image root): any path they give is theirs to read.
        super().__init__(table, ".", allow_paths_outside_root=True, **options)
        self.in_memory = in_memory

    def load_image(self, path: Path) -> Any:
        image = self.in_memory.get(str(path))
        return image.convert("RGB") if image is not None else super().load_image(path)


class ImageScorer:
    """A loaded ``Scorer`` with pyiqa's manners (``create_scorer``): call it on paths, folders,
    PIL images or tensors; ``score_range``, ``lower_better``; ``as_loss`` for gradients."""

    def __init__(self, model: Scorer, device: torch.device, batch_size: int = 16, as_loss: bool = False):
        self.model, self.device, self.batch_size, self.as_loss = model.eval(), device, batch_size, as_loss
        if as_loss:  # a loss's weights stay fixed: gradients reach the inputs, not the scorer
            model.requires_grad_(False)
        self._tensor_transform = None

    @property
    def score_range(self) -> ScoreRange:
        return self.model.score_range

    @property
    def lower_better(self) -> bool:
        return not self.model.score_range.higher_is_better

    @property
    def text_names(self) -> tuple[str, ...]:
        return tuple(self.model.text_names)

    def __call__(self, images: ImageInput | Sequence[ImageInput], descriptions: TextSource | None = None,
                 texts: Mapping[str, TextSource] | None = None) -> torch.Tensor:  # fmt: skip
        """Scores ``[N]`` on ``score_range``: differentiable for tensors when ``as_loss``, else
        detached on the CPU. A bad image raises (``score`` can skip them instead)."""
        if _is_tensor_input(images):
            pixels = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
            scores = self.score_tensor(pixels, descriptions, texts)["score"]
            return scores if self.as_loss else scores.float().cpu().clone()
        return torch.tensor(self.score(images, descriptions, texts).scores)

    def score(self, images: ImageInput | Sequence[ImageInput], descriptions: TextSource | None = None,
              texts: Mapping[str, TextSource] | None = None, on_bad_image: str = "error", progress: bool = False,
              max_pixels: int = DEFAULT_MAX_PIXELS, recursive: bool = False) -> ScoreResult:  # fmt: skip
        """Score image files, folders (their images, sorted by name) and PIL images, or tensors.

        Args:
            descriptions: MTPG-AIAA's ``description`` per image: a list aligned with the
                expanded images, or ``{path, name in its folder or file name: text}``.
            texts: any named texts the system reads (``text_names``), each as ``descriptions``.
            on_bad_image: ``error`` (raise naming the file) or ``skip`` (counted in ``skipped``).
        """
        if on_bad_image not in ("error", "skip"):
            raise SettingError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if _is_tensor_input(images):
            pixels = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
            outputs = self.score_tensor(pixels, descriptions, texts)
            return self._result([f"<tensor {i}>" for i in range(len(outputs["score"]))], outputs["score"],
                                outputs.get("distribution"), [])  # fmt: skip
        refused: list[dict[str, str]] | None = [] if on_bad_image == "skip" else None
        expanded = expand_inputs(images, recursive, refused)
        if not expanded:
            raise BadInputError(f"no image files in {images}" + (f" ({len(refused)} entries refused)" if refused else ""))
        keys = [name if isinstance(image, Image.Image) else image for image, name in expanded]
        row_texts = texts_per_image([name for _, name in expanded], keys, self._named(descriptions, texts), self.text_names)
        table = pd.DataFrame({"image": keys, **row_texts})
        table.attrs["source"] = "the images to score"  # named in a bad image's error
        in_memory = {name: image for image, name in expanded if isinstance(image, Image.Image)}
        dataset = _Images(table, in_memory, transform=self.model.build_transform(train=False),
                          tokenize_texts=self.model.tokenize if self.text_names else None, text_names=self.text_names,
                          on_bad_image=on_bad_image, max_pixels=max_pixels)  # fmt: skip
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, collate_fn=collate_samples)
        # A batch-dependent model (MTPG's released fusion) scores every image alone, as its demo does.
        batching = "per_image" if self.model.outputs_depend_on_batch else "batch"
        predictions = predict(self.model, loader, self.device, batching=batching, progress=progress)
        skipped = [*(refused or []), *({"image": row["image_name"], "reason": row["reason"]} for row in predictions.skipped)]
        if skipped:
            log.warning("skipped %d unreadable image(s), first: %s", len(skipped), skipped[0]["reason"])
        frame = predictions.table
        columns = [c for c in frame.columns if c.startswith(("prob_", "dist_"))]
        distribution = torch.tensor(frame[columns].to_numpy(dtype=float)) if columns and len(frame) else None
        return self._result(frame["image"].tolist(), torch.tensor(frame["pred"].to_numpy(dtype=float)), distribution, skipped)

    def score_tensor(self, pixels: torch.Tensor, descriptions: TextSource | None = None,
                     texts: Mapping[str, TextSource] | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """``pixels [3, H, W]`` or ``[B, 3, H, W]`` RGB in 0-1 -> the model's outputs (``score [B]``,
        maybe ``distribution [B, K]``) through the differentiable preprocessing; with
        ``as_loss`` gradients flow back to ``pixels``."""
        from .transforms import tensor_transform

        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(0)
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise BadInputError(f"a tensor image must be [3, H, W] or [B, 3, H, W] RGB, got {list(pixels.shape)}")
        if not pixels.is_floating_point():
            raise BadInputError(f"a tensor image must be float in 0-1, got {pixels.dtype} (divide uint8 by 255)")
        if self._tensor_transform is None:
            self._tensor_transform = tensor_transform(self.model.build_transform(train=False))
        names = [f"<tensor {i}>" for i in range(pixels.shape[0])]
        row_texts = texts_per_image(names, names, self._named(descriptions, texts), self.text_names)
        with torch.set_grad_enabled(self.as_loss), torch.inference_mode(not self.as_loss):
            batch: dict[str, Any] = {"image": self._tensor_transform(pixels.to(self.device))}
            if self.text_names:
                batch["tokens"] = {name: value.to(self.device) for name, value in self.model.tokenize(row_texts).items()}
            if not self.model.outputs_depend_on_batch:
                outputs = self.model(batch)
            else:  # each image alone, as the file path scores it
                alone = [self.model({key: (value[i : i + 1] if torch.is_tensor(value) else {k: v[i : i + 1] for k, v in value.items()})
                                     for key, value in batch.items()}) for i in range(pixels.shape[0])]  # fmt: skip
                outputs = {key: torch.cat([out[key] for out in alone]) for key in alone[0] if key in ("score", "distribution")}
        return {key: value for key, value in outputs.items() if key in ("score", "distribution")}

    def _named(self, descriptions: TextSource | None, texts: Mapping[str, TextSource] | None) -> dict[str, Any]:
        if isinstance(texts, (str, bytes)) or (texts is not None and not isinstance(texts, Mapping)):
            raise SettingError("texts must be a mapping {text name: one text per image}, e.g. "
                               f"{{{(self.text_names or ('description',))[0]!r}: [...]}}")  # fmt: skip
        named = dict(texts or {})
        if descriptions is not None:
            named["description"] = descriptions
        unknown = sorted(set(named) - set(self.text_names))
        if unknown:
            raise SettingError(f"this {self.model.system} model reads no text {unknown} (it reads {list(self.text_names) or 'none'})")
        if "description" in self.text_names and "description" not in named:
            log.warning(MISSING_DESCRIPTIONS)
        return named

    def _result(self, images: list[str], scores: torch.Tensor, distribution: torch.Tensor | None,
                skipped: list[dict[str, str]]) -> ScoreResult:  # fmt: skip
        columns = distribution_columns(self.model, distribution.shape[1]) if distribution is not None else []
        distributions = distribution.detach().float().cpu().tolist() if distribution is not None else None
        return ScoreResult(images, scores.detach().float().cpu().tolist(), self.score_range, distributions, columns, skipped)


def _is_tensor_input(images: Any) -> bool:
    if isinstance(images, torch.Tensor):
        return True
    if isinstance(images, (str, Path, Image.Image)) or not isinstance(images, Sequence) or not images:
        return False
    kinds = {isinstance(item, torch.Tensor) for item in images}
    if kinds == {True, False}:
        raise BadInputError("mix of tensors and other inputs: score the tensors and the files in two calls")
    return kinds == {True}


def resolve_weights(weights: str | Path | None, name: str | None) -> Path:
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


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:N``...; one line otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise SettingError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"device {name!r}: no CUDA GPU is available here; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type not in ("cpu",):
        raise SettingError(f"device {name!r} is not supported for scoring; use auto, cpu or cuda[:N]")
    return device


def create_scorer(name: str | None, weights: str | Path | None = None, device: str = "auto", batch_size: int = 16,
                  as_loss: bool = False, **load_options: Any) -> ImageScorer:  # fmt: skip
    """An ``ImageScorer`` for system ``name`` (``mtpg_aiaa.list_models()``; ``None``: whatever
    the file holds) with local ``weights``.

    The file's own system (read from its content) must be ``name``; ``as_loss`` gives a
    differentiable scorer for tensors; ``load_options`` go to the system's loader (MTPG:
    ``backbone_precision="fp16"``).
    """
    from .models.loading import load_model
    from .models.registry import get_model_entry

    if name is not None:
        get_model_entry(name)  # unknown names fail here, listing the registered ones
    if int(batch_size) != batch_size or batch_size < 1:
        raise SettingError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = resolve_weights(weights, name)
    resolved = resolve_device(device)
    model = load_model(path, device=resolved, expect="scorer", **load_options)
    if name is not None and model.system != name:
        raise CheckpointError(f"{path} holds a {model.system!r} model, not {name!r}; "
                              f"use create_scorer({model.system!r}, weights=...) or leave the name out")  # fmt: skip
    return ImageScorer(model, resolved, int(batch_size), as_loss)
