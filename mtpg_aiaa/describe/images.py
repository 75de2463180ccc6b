"""Image preparation LLaVA-1.5 / ShareGPT4V / GalleryGPT apply before the CLIP processor."""
from __future__ import annotations

from PIL import Image


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Centre ``image`` on a square canvas of its longer side filled with ``fill``.

    The same as LLaVA's ``expand2square`` (``image_aspect_ratio="pad"``, which GalleryGPT
    was trained with): offsets ``(long - short) // 2``, ``fill`` the processor's mean
    colour, so the CLIP centre crop that follows keeps the whole painting.
    """
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(image_mean: list[float] | tuple[float, ...]) -> tuple[int, int, int]:
    """The processor's normalisation mean as an 8-bit RGB colour, truncated as LLaVA does."""
    return tuple(int(value * 255) for value in image_mean[:3])  # type: ignore[return-value]
