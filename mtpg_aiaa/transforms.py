"""Image preprocessing chosen by name.

- ``official``: what the MTPG-AIAA authors' release does (required to reproduce the
  released checkpoint): squash to a square, ImageNet statistics, even though the
  backbone is CLIP.
- ``clip``: Long-CLIP's own preprocessing (keep aspect, centre crop, CLIP statistics).
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TRANSFORM_NAMES = ("official", "clip")

ImageTransform = Callable[[Image.Image], torch.Tensor]


def build_transform(name: str, image_size: int = 224, train: bool = False) -> ImageTransform:
    """Build the preprocessing pipeline called ``name``.

    Args:
        name: one of :data:`TRANSFORM_NAMES`.
        image_size: side of the square output.
        train: random augmentation for training instead of the deterministic eval path.

    Returns:
        A callable mapping an RGB ``PIL.Image`` of any size to a float32 tensor
        [3, image_size, image_size], normalised with the pipeline's statistics.

    Raises:
        ValueError: unknown ``name`` or a non-positive ``image_size``.
    """
    if name not in TRANSFORM_NAMES:
        raise ValueError(f"Unknown transform {name!r}; valid names: {', '.join(TRANSFORM_NAMES)}")
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    image_size = int(image_size)
    if name == "official":
        return _official_train(image_size) if train else _official_eval(image_size)
    return _clip_train(image_size) if train else _clip_eval(image_size)


def _official_eval(image_size: int) -> ImageTransform:
    # Aspect ratio is deliberately not kept: the released checkpoint saw squashed images.
    return T.Compose([
        T.Resize((image_size, image_size), interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _official_train(image_size: int) -> ImageTransform:
    # The authors resize to 256 and crop 224; other sizes keep that 256/224 margin.
    resized = round(image_size * 256 / 224)
    return T.Compose([
        T.Resize((resized, resized), interpolation=InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _clip_eval(image_size: int) -> ImageTransform:
    return T.Compose([
        T.Resize(image_size, interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def _clip_train(image_size: int) -> ImageTransform:
    # Our choice (Long-CLIP ships no training transform): the eval view, the central
    # square, jittered by a mild random crop keeping >= 90% of its area, since
    # composition matters for aesthetics. Cropping the square first matters: a plain
    # RandomResizedCrop(scale=(0.9, 1)) can never fit a 3:4-4:3 box of 90% area into
    # an image wider than about 1.5:1, so it would fall back to the same centre crop
    # every time and augment nothing.
    return T.Compose([
        CenterSquareCrop(),
        T.RandomResizedCrop(image_size, scale=(0.9, 1.0), ratio=(0.9, 1 / 0.9),
                            interpolation=InterpolationMode.BICUBIC, antialias=True),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class CenterSquareCrop:
    """Crop the largest central square of a PIL image, at its native resolution."""

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def tensor_transform(transform: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """The differentiable twin of an eval pipeline made of ``Resize``, ``CenterCrop``,
    ``ToTensor`` and ``Normalize`` (every system's eval preprocessing here): ``[B, 3, H, W]`` RGB
    in 0-1 -> the model's input, by the same resizes (antialiased, on floats) and statistics.

    It differs from the PIL path only by rounding: PIL resamples 8-bit pixels and rounds the
    result to 8 bits (and clips bicubic overshoot), this path stays in floating point and never
    clips, so no gradient is cut. ``api.TENSOR_PATH_TOLERANCE`` states the measured difference.
    """
    import torchvision.transforms.functional as TF

    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for step in steps:
        if isinstance(step, T.Resize):
            ops.append(lambda x, s=step: TF.resize(x, s.size, s.interpolation, s.max_size, antialias=True))
        elif isinstance(step, T.CenterCrop):
            ops.append(lambda x, s=step: TF.center_crop(x, s.size))
        elif isinstance(step, T.Normalize):
            ops.append(lambda x, s=step: TF.normalize(x, s.mean, s.std))
        elif not isinstance(step, T.ToTensor):  # the input is a tensor in 0-1 already
            raise ValueError(f"no differentiable version of the preprocessing step {step!r}; score files or PIL images")

    def apply(pixels: torch.Tensor) -> torch.Tensor:
        for op in ops:
            pixels = op(pixels)
        return pixels

    return apply
