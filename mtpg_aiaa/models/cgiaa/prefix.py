"""The image side of CG-IAA's generator: released preprocessing and the expert prefix.

Released preprocessing: squash to 224x224 (bilinear, PIL), ``ToTensor``, CLIP mean/std; no
crop. The prefix every expert reads is the projected CLIP image feature, L2-normalised.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from mtpg_aiaa.transforms import CLIP_MEAN, CLIP_STD

RELEASED_IMAGE_SIZE = 224


def build_release_transform(image_size: int = RELEASED_IMAGE_SIZE) -> Callable[[Image.Image], torch.Tensor]:
    """RGB PIL image of any size -> ``[3, image_size, image_size]`` as the release preprocesses it."""
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])  # fmt: skip


def clip_prefix(clip_model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, embed_dim]``: ``normalize(ln_post(CLS) @ visual.proj)`` in fp32."""
    return F.normalize(clip_model.encode_image(images).float(), dim=-1)
