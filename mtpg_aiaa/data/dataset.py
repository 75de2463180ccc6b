"""The one torch dataset over an image table (every system, every loop): image tensor, and
whatever the table has of score, target on [0, 1], description, named texts, distribution."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from mtpg_aiaa.data.table import image_path, read_score_table

logger = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("error", "skip")
_SKIP_REPORT_KEYS = ("index", "image_name", "reason")

Transform = Callable[[Image.Image], torch.Tensor]
Tokenize = Callable[[list[str]], torch.Tensor]
TokenizeTexts = Callable[[dict[str, list[str]]], dict[str, torch.Tensor]]  # ``Scorer.tokenize``


class AestheticsDataset(Dataset):
    """One sample per row of an image table: one from :func:`read_score_table` (labelled,
    with descriptions), or any table with an ``image`` column (unlabelled images to score,
    a CG-IAA critique table, an AesNet attribute table).

    A sample is a dict:
        ``image``: transformed tensor, e.g. [3, 224, 224] float32;
        ``image_name``: str; ``index``: row position; and, when the table has the column:
        ``target``: float32 scalar tensor, score / score_scale on [0, 1];
        ``score``: the raw score (float);
        ``description``: str (``""`` for a row without one);
        ``description_tokens``: LongTensor [context], only when ``tokenize`` is given;
        ``texts``: ``{name: str}``, every named text of the row (``named_texts.py``);
        ``tokens``: ``{name: LongTensor [L]}``, only when ``tokenize_texts`` (a scorer's
        ``tokenize``) is given; ``distribution``: float32 ``[K]`` summing to 1 (vote counts
        normalised), only when the table has ``dist_*`` columns (``table.attrs``) or
        ``distribution_columns`` names them.

    With ``on_bad_image="skip"`` an unreadable image yields
    ``{"skipped": True, "index", "image_name", "reason"}`` instead, and a warning is
    logged; :func:`collate_samples` moves those into ``batch["skipped"]`` so an
    evaluation can report exactly which images it did not score.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        image_root: str | os.PathLike,
        transform: Transform,
        tokenize: Optional[Tokenize] = None,
        on_bad_image: str = "error",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tokenize_texts: Optional[TokenizeTexts] = None,
        text_names: tuple[str, ...] = (),
        allow_paths_outside_root: Optional[bool] = None,
        distribution_columns: Optional[list[str]] = None,
    ) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        if "image" not in table.columns:
            raise ValueError(f"table lacks column 'image' (has {list(table.columns)}); build it with read_score_table")
        self.image_root = Path(image_root)
        # None: as the table was read (read_score_table's allow_paths_outside_root)
        self.allow_paths_outside_root = bool(table.attrs.get("allow_paths_outside_root", False)
                                             if allow_paths_outside_root is None else allow_paths_outside_root)  # fmt: skip
        self._resolved_root: Path | None = None
        self.transform = transform
        self.tokenize = tokenize
        self.on_bad_image = on_bad_image
        self.max_pixels = max_pixels
        # Plain lists: cheaper to index than DataFrame rows and to pickle into workers.
        self.image_names = [str(name) for name in table["image"].tolist()]
        self.scores = [float(score) for score in table["score"].tolist()] if "score" in table.columns else None
        self.targets = [float(target) for target in table["target"].tolist()] if "target" in table.columns else None
        self.descriptions = ([str(text) for text in table["description"].tolist()] if "description" in table.columns
                             else None)  # fmt: skip
        if tokenize is not None and self.descriptions is None:
            raise ValueError("tokenize reads the descriptions, but the table has no description column")
        self.source = table.attrs.get("source", "the score table")
        self.tokenize_texts = tokenize_texts
        self.texts = _row_texts(table, text_names, self.source)
        columns = distribution_columns if distribution_columns is not None else table.attrs.get("distribution_columns", [])
        self.distributions = torch.tensor(table[columns].to_numpy(), dtype=torch.float32) if columns else None
        if self.distributions is not None and (self.distributions.sum(dim=1) <= 0).any():
            row = int(torch.nonzero(self.distributions.sum(dim=1) <= 0)[0])
            raise BadInputError(f"{self.source}: the vote counts {columns} of row {row} ({self.image_names[row]}, "
                                "0-based) sum to zero")  # fmt: skip

    def __len__(self) -> int:
        return len(self.image_names)

    def load_image(self, path: Path) -> Any:
        """The image at ``path`` as ``self.transform`` takes it (here: a decoded RGB PIL image);
        raises ``BadInputError``. Subclasses may hand on something else (encoded bytes)."""
        return load_rgb_image(path, max_pixels=self.max_pixels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]  # normalises negatives, raises IndexError
        image_name = self.image_names[index]
        try:
            if self._resolved_root is None and not self.allow_paths_outside_root:
                self._resolved_root = self.image_root.resolve()
            path = image_path(self.image_root, image_name, self.allow_paths_outside_root, self._resolved_root)
            image = self.load_image(path)
        except BadInputError as error:
            reason = f"{error} (table row {index}, 0-based, read from {self.source})"
            if self.on_bad_image == "error":
                raise BadInputError(reason) from error
            logger.warning("Skipping a bad image: %s", reason)
            return {"skipped": True, "index": index, "image_name": image_name, "reason": reason}

        sample: dict[str, Any] = {"image": self.transform(image)}
        if self.targets is not None:
            sample["target"] = torch.tensor(self.targets[index], dtype=torch.float32)
        if self.scores is not None:
            sample["score"] = self.scores[index]
        sample.update(image_name=image_name, index=index)
        if self.descriptions is not None:
            sample["description"] = self.descriptions[index]
        if self.tokenize is not None:
            tokens = self.tokenize([sample["description"]])[0]
            sample["description_tokens"] = torch.as_tensor(tokens, dtype=torch.long)
        texts = self.texts[index]
        if texts:
            sample["texts"] = texts
        if self.tokenize_texts is not None:
            tokens = self.tokenize_texts({name: [text] for name, text in texts.items()})
            sample["tokens"] = {name: torch.as_tensor(value[0], dtype=torch.long) for name, value in tokens.items()}
        if self.distributions is not None:
            counts = self.distributions[index]
            sample["distribution"] = counts / counts.sum()
        return sample


def _row_texts(table: pd.DataFrame, required: tuple[str, ...], source: str) -> list[dict[str, str]]:
    """Each row's named texts; ``required`` names (a model's ``text_names``) must be present."""
    names = list(dict.fromkeys([*table.attrs.get("text_names", []), *required]))
    if "description" in table.columns and "description" not in names:
        names.insert(0, "description")
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise BadInputError(f"{source}: the model reads text(s) {missing}, which the table does not have; "
                            "add them with data.texts (docs/data.md)")  # fmt: skip
    columns = {name: table[name].astype(str).tolist() for name in names}
    return [{name: values[i] for name, values in columns.items()} for i in range(len(table))]


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples from :class:`AestheticsDataset`, setting skipped ones aside.

    Returns a dict with, for the B good samples: ``image`` [B, ...] and
    ``target`` [B] (float32) and ``description_tokens`` [B, context] stacked;
    ``score`` float64 [B]; ``index`` LongTensor [B]; ``image_name`` and
    ``description`` lists of str. ``skipped`` is always present: a list of
    ``{"index", "image_name", "reason"}``, possibly empty.

    If every sample was skipped, the batch holds only ``index`` (an empty
    LongTensor) and ``skipped``: there is no ``image`` key, so a loop should
    ``continue`` when ``len(batch["index"]) == 0``.
    """
    good = [sample for sample in samples if not sample.get("skipped", False)]
    skipped = [
        {key: sample[key] for key in _SKIP_REPORT_KEYS}
        for sample in samples
        if sample.get("skipped", False)
    ]
    if not good:
        return {"index": torch.empty(0, dtype=torch.long), "skipped": skipped}
    batch: dict[str, Any] = {}
    for key in good[0]:
        values = [sample[key] for sample in good]
        if key == "index":
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], float):
            batch[key] = torch.tensor(values, dtype=torch.float64)
        elif isinstance(values[0], dict):  # named texts / tokens: {name: [B] list or [B, L] tensor}
            batch[key] = {name: (torch.stack([value[name] for value in values])
                                 if isinstance(values[0][name], torch.Tensor) else [value[name] for value in values])
                          for name in values[0]}  # fmt: skip
        else:
            batch[key] = values
    batch["skipped"] = skipped
    return batch


def build_dataset(
    csv: str | os.PathLike,
    image_root: str | os.PathLike,
    transform: Transform,
    tokenize: Optional[Tokenize] = None,
    descriptions_csv: Optional[str | os.PathLike] = None,
    score_scale: float = 10.0,
    on_bad_image: str = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> AestheticsDataset:
    """Read ``csv`` with :func:`read_score_table` and wrap it in an :class:`AestheticsDataset`."""
    table = read_score_table(csv, descriptions_csv=descriptions_csv, score_scale=score_scale)
    return AestheticsDataset(
        table, image_root, transform, tokenize=tokenize,
        on_bad_image=on_bad_image, max_pixels=max_pixels,
    )
