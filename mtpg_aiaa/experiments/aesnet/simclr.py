"""The toy claim's image-only baseline: SimCLR-style self-supervision of a backbone, as a task
the engine's ``Trainer`` runs (one step: two views of the batch, symmetric InfoNCE).

The views keep colour, blur and grain (the toy score's causes): a random horizontal flip and
a random crop of 70-100 % of the side, resized back. The projection is SimCLR's own head,
discarded after pretraining; the temperature is 0.1.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mtpg_aiaa.models.aesnet.losses import symmetric_info_nce

TEMPERATURE = 0.1


def two_views(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random flips / crops of ``images [B, 3, S, S]``, each ``[B, 3, S, S]``."""
    size = images.shape[-1]
    views = []
    for _ in range(2):
        out = torch.empty_like(images)
        for i, image in enumerate(images):
            side = int(size * (0.7 + 0.3 * float(torch.rand(1, generator=generator))))
            top, left = (int(torch.randint(0, size - side + 1, (1,), generator=generator)) for _ in range(2))
            crop = image[:, top : top + side, left : left + side]
            if float(torch.rand(1, generator=generator)) < 0.5:
                crop = crop.flip(-1)
            out[i] = F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        views.append(out)
    return views[0], views[1]


class SimCLRModel(nn.Module):
    """A backbone (pooled features ``[B, C]``, shared with the caller: training updates it in
    place) and a linear projection to ``projection_dim``."""

    def __init__(self, backbone: nn.Module, projection_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(backbone.num_features, projection_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> unit-norm projections ``[B, projection_dim]``."""
        return F.normalize(self.projection(self.backbone(images)), dim=-1)


class SimCLRTask:
    """Images of ``train_dataset`` (batched by ``collate`` into ``{"image": [B, 3, S, S]}``) ->
    the symmetric InfoNCE of two views; no validation. ``seed`` seeds the views."""

    def __init__(self, train_dataset: Dataset, collate: Callable[[list], dict], seed: int):
        self.train_dataset, self._collate = train_dataset, collate
        self.generator = torch.Generator().manual_seed(seed)

    def collate(self, samples: list) -> dict:
        return self._collate(samples)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        first, second = two_views(batch["image"], self.generator)
        loss = symmetric_info_nce(model(first.to(device)), model(second.to(device)), torch.tensor(np.log(1 / TEMPERATURE)))
        return {"loss": loss}

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {}
