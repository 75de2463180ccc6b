"""Stage-1 samples: a painting and three manipulated versions of it, made on the fly.

Scores are not used (pretraining is self-supervised). Each sample is one training image
cropped as the early release's pretraining loader did (squash to 256x256, random 224
crop, no flip; other model sizes keep the 256/224 margin), then, at that size and still
``uint8``:

- view 0: the crop itself, labelled with the identity id 29 ("an unaltered painting");
- views 1-3: the mild, medium and strong versions of one operation group drawn uniformly
  from the ten manipulated operations of :mod:`mtpg_aiaa.models.mtpg.manipulations`.

Rotation has two ids (+45 and -45 degrees: directions, not strengths). A rotation sample
holds both, and its third view is one id drawn uniformly from the 27 ids of the
three-strength operations, so its views are still useful for prompt matching and
preference; ``ordered`` is False for it, which keeps it out of the strength-ordering
loss. CutMix's patch comes from another training image chosen by the sample's RNG.

The randomness of a sample (crop, operation, noise, CutMix source and position) comes
from torch's global generator when ``__getitem__`` runs; wrap the dataset in
``engine.seeding.PerSampleSeeded`` so it depends only on ``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from mtpg_aiaa.data.dataset import BAD_IMAGE_POLICIES
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from mtpg_aiaa.models.mtpg.manipulations import MANIPULATIONS, apply_manipulation, operation_groups
from mtpg_aiaa.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, TRANSFORM_NAMES

logger = logging.getLogger(__name__)

__all__ = ["ManipulatedDataset", "NUM_VIEWS", "ORIGINAL_ID", "VIEW_NAMES", "draw_view_ids", "view_strengths"]

VIEW_NAMES = ("original", "mild", "medium", "strong")
NUM_VIEWS = len(VIEW_NAMES)
ORIGINAL_ID = operation_groups()["none"][0]  # 29
# The manipulated operations a sample draws from, uniformly: nine triples and rotation.
_OPERATIONS = {name: ids for name, ids in operation_groups().items() if name != "none"}
_ORDERED_IDS = [i for ids in _OPERATIONS.values() if len(ids) == NUM_VIEWS - 1 for i in ids]
_STATISTICS = {"official": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}

Tokenize = Callable[[list[str]], torch.Tensor]


def draw_view_ids(rng: np.random.Generator) -> tuple[list[int], bool]:
    """The ids of the three manipulated views of one sample, and whether they are ordered.

    An operation is drawn uniformly from the ten manipulated ones. A three-strength
    operation gives its ids mild -> strong and ``True``; rotation gives ``[27, 28, x]``
    with ``x`` uniform over the 27 ids of the three-strength operations, and ``False``.
    """
    names = list(_OPERATIONS)
    ids = list(_OPERATIONS[names[int(rng.integers(len(names)))]])
    ordered = len(ids) == NUM_VIEWS - 1
    while len(ids) < NUM_VIEWS - 1:
        ids.append(_ORDERED_IDS[int(rng.integers(len(_ORDERED_IDS)))])
    return ids, ordered


def view_strengths(op_ids: list[int]) -> list[int]:
    """Strength (0 mild, 1 medium, 2 strong) of each id; -1 for the identity and rotation,
    which have none."""
    return [-1 if MANIPULATIONS[i].operation in ("none", "rotation") else MANIPULATIONS[i].strength for i in op_ids]


class ManipulatedDataset(Dataset):
    """One stage-1 sample per row of a table from ``read_score_table`` (scores unused).

    A sample is a dict:
        ``views``: float32 [4, 3, S, S], normalised with ``preprocess``'s statistics:
            original, then the three manipulated views (see the module docstring);
        ``labels``: int64 [4], the manipulation id of each view (original = 29);
        ``strengths``: int64 [4], see :func:`view_strengths`;
        ``ordered``: bool scalar tensor, whether views 1-3 are mild < medium < strong;
        ``has_description``: bool scalar tensor, the description is not blank;
        ``description_tokens``: int64 [context] (only with ``tokenize``; blank allowed);
        ``description``: str; ``image_name``: str; ``index``: row position.

    With ``on_bad_image="skip"`` an unreadable image yields ``{"skipped": True, "index",
    "image_name", "reason"}`` (``collate_samples`` sets it aside) and an unreadable
    CutMix source falls back to CutMix's single-image patch, with a warning either way.

    Args:
        preprocess: ``official`` (ImageNet statistics) or ``clip`` (CLIP statistics);
            only the normalisation follows it, the crop is the release's pretraining one.
        image_size: S, the model's input side (>= 32, the manipulations' minimum).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        image_root: str | os.PathLike,
        preprocess: str = "official",
        image_size: int = 224,
        tokenize: Optional[Tokenize] = None,
        on_bad_image: str = "error",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        if preprocess not in TRANSFORM_NAMES:
            raise ValueError(f"unknown preprocess {preprocess!r}; valid names: {', '.join(TRANSFORM_NAMES)}")
        if "image" not in table.columns or "description" not in table.columns:
            raise ValueError("table lacks the image or description column; build it with read_score_table")
        if len(table) == 0:
            raise ValueError("the pretraining table has no rows")
        self.image_root, self.image_size = Path(image_root), int(image_size)
        self.tokenize, self.on_bad_image, self.max_pixels = tokenize, on_bad_image, max_pixels
        self.image_names = [str(name) for name in table["image"].tolist()]
        self.descriptions = [str(text) for text in table["description"].tolist()]
        self.source = table.attrs.get("source", "the score table")
        # The release's pretraining loader: resize 256x256, random crop 224, no flip.
        resized = round(self.image_size * 256 / 224)
        self.crop = T.Compose([
            T.Resize((resized, resized), interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.RandomCrop(self.image_size),
        ])  # fmt: skip
        mean, std = _STATISTICS[preprocess]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.image_names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]  # normalises negatives, raises IndexError
        try:
            image = self._load(index)
        except BadInputError as error:
            if self.on_bad_image == "error":
                raise
            logger.warning("Skipping a bad image: %s", error)
            return {"skipped": True, "index": index, "image_name": self.image_names[index], "reason": str(error)}

        crop = np.asarray(self.crop(image))  # uint8 [S, S, 3], drawn from torch's generator
        # One NumPy generator per sample, seeded from torch's (seeded per sample by
        # PerSampleSeeded), for the operation, the noise and CutMix.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        op_ids, ordered = draw_view_ids(rng)
        other = self._cutmix_source(index, rng) if any(MANIPULATIONS[i].operation == "cutmix" for i in op_ids) else None
        views = [crop] + [apply_manipulation(crop, op_id, rng, other=other) for op_id in op_ids]
        labels = [ORIGINAL_ID, *op_ids]

        description = self.descriptions[index]
        sample: dict[str, Any] = {
            "views": self._normalise(np.stack(views)),
            "labels": torch.tensor(labels, dtype=torch.long),
            "strengths": torch.tensor(view_strengths(labels), dtype=torch.long),
            "ordered": torch.tensor(ordered),
            "has_description": torch.tensor(bool(description.strip())),
            "description": description,
            "image_name": self.image_names[index],
            "index": index,
        }
        if self.tokenize is not None:
            sample["description_tokens"] = torch.as_tensor(self.tokenize([description])[0], dtype=torch.long)
        return sample

    def _load(self, index: int) -> Image.Image:
        try:
            return load_rgb_image(self.image_root / self.image_names[index], max_pixels=self.max_pixels)
        except BadInputError as error:
            raise BadInputError(f"{error} (table row {index}, 0-based, read from {self.source})") from error

    def _cutmix_source(self, index: int, rng: np.random.Generator) -> np.ndarray | None:
        """Another training image squashed to S x S (uint8), or None (CutMix then uses
        the inverted, mirrored crop) when the table holds one image or, under ``skip``,
        the chosen one is unreadable."""
        if len(self) == 1:
            return None
        other = int(rng.integers(len(self) - 1))
        other += other >= index  # any row but this one
        try:
            image = self._load(other)
        except BadInputError as error:
            if self.on_bad_image == "error":
                raise BadInputError(f"CutMix source of row {index}: {error}") from error
            logger.warning("CutMix source unreadable, using the single-image patch instead: %s", error)
            return None
        return np.asarray(image.resize((self.image_size, self.image_size), Image.BILINEAR))

    def _normalise(self, views: np.ndarray) -> torch.Tensor:
        """uint8 ``[V, S, S, 3]`` -> float32 ``[V, 3, S, S]``, as ``ToTensor`` + ``Normalize``."""
        tensor = torch.from_numpy(views).permute(0, 3, 1, 2).float().div_(255.0)
        return (tensor - self.mean) / self.std
