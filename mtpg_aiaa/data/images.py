"""Load one user image as a fully decoded RGB ``PIL.Image``, or fail with a clear error.

The authors' code calls ``Image.open(path).convert('RGB')`` with truncated JPEGs
allowed and no pixel limit. We keep their colour conversion (so scores stay
comparable with the released checkpoint) but refuse broken files and
decompression bombs instead of silently scoring garbage.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from mtpg_aiaa.data.errors import BadInputError

# 8000 x 8000: above any painting scan or photograph the scorer needs (it sees 224 x 224),
# and well under PIL's own hard limit (2 * Image.MAX_IMAGE_PIXELS = 178,956,970 pixels),
# which a 190 KB PNG can reach while decoding to 1.7 GB. ``data.max_pixels`` changes it.
DEFAULT_MAX_PIXELS = 64_000_000

# Modes whose samples do not fit in 8 bits; PIL's convert('RGB') clips them at 255,
# which turns an ordinary 16-bit scan almost white.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WIDE_MODES = _SIXTEEN_BIT_MODES | {"I", "F"}

# LOAD_TRUNCATED_IMAGES is a module global of PIL; serialise our temporary change.
_TRUNCATION_FLAG_LOCK = threading.Lock()


def load_rgb_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, fully decode and convert an image file to RGB.

    Args:
        path: image file on disk.
        max_pixels: refuse images with ``width * height`` above this, checked from
            the header before any pixel is decoded (decompression-bomb guard).

    Returns:
        A loaded ``PIL.Image.Image`` in mode ``RGB`` (size W x H as in the file);
        the file itself is closed.

    Raises:
        BadInputError: the file is missing, is not a decodable image, is truncated,
            or exceeds ``max_pixels``. The message names ``path`` and the cause.
    """
    path = Path(path)
    if not path.is_file():
        reason = "is a directory, not an image file" if path.is_dir() else "does not exist"
        raise BadInputError(f"Image file {path} {reason}")
    try:
        # Our explicit max_pixels check below is the guard; PIL's softer warning
        # for images between its two thresholds would only duplicate it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_pixel_count(image, path, max_pixels)
                _decode_fully(image)
                return _convert_to_rgb(image)
    except BadInputError:
        raise
    except Image.DecompressionBombError as error:
        raise BadInputError(f"Image {path} is too large to decode safely: {error}") from error
    except Exception as error:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise BadInputError(
            f"Cannot read image {path}: {type(error).__name__}: {error}"
        ) from error


def _check_pixel_count(image: Image.Image, path: Path, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise BadInputError(
            f"Image {path} is {width}x{height} = {width * height:,} pixels, above the "
            f"limit of {max_pixels:,} (decompression-bomb guard); "
            "raise max_pixels if the image is genuine"
        )


def _decode_fully(image: Image.Image) -> None:
    """Decode every pixel now, so truncated files fail here and not in a worker later."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        image.load()
        return
    # Someone enabled PIL's lenient mode process-wide; a truncated file would then
    # decode into grey padding. Turn it off for this load only.
    with _TRUNCATION_FLAG_LOCK:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _convert_to_rgb(image: Image.Image) -> Image.Image:
    """Plain ``convert('RGB')`` as the authors do, except for >8-bit modes.

    Alpha is dropped, not composited (faithful to the released checkpoint's inputs);
    EXIF orientation is not applied, for the same reason.
    """
    if image.mode in _WIDE_MODES:
        return Image.fromarray(_wide_to_uint8(image)).convert("RGB")
    return image.convert("RGB")


def _wide_to_uint8(image: Image.Image) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float samples to uint8 [H, W].

    16-bit data has a nominal range, so we scale it (65535 -> 255) and keep its
    brightness. Files store 32-bit ints and floats without a nominal range, so we
    follow the common conventions: ints that fit 16 bits are 16-bit data (PIL
    decodes some 16-bit files to mode ``I``), floats within [0, 1] are unit
    intensities; anything else is stretched min..max so it stays visible.

    Computed ``CHUNK_PIXELS`` samples at a time (in float64, as one whole-image pass
    would), so a 64-megapixel 16-bit file needs its decoded plane, the uint8 result and
    one chunk, not several float64 copies of the image (3 GB before).
    """
    values = np.asarray(image)
    flat = values.reshape(-1)
    low, high = _finite_range(flat, values.dtype)
    # value -> (value - offset) * factor / divisor, each step as the whole-image formula had it
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= 65535):
        offset, factor, divisor = 0.0, 1.0, 257.0
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        offset, factor, divisor = 0.0, 255.0, 1.0
    elif high > low:
        offset, factor, divisor = low, 255.0 / (high - low), 1.0
    else:
        return np.zeros(values.shape, dtype=np.uint8)
    out = np.empty(flat.shape, dtype=np.uint8)
    for start in range(0, flat.size, CHUNK_PIXELS):
        chunk = _finite_float64(flat[start : start + CHUNK_PIXELS], values.dtype)
        if offset:
            chunk -= offset
        if factor != 1.0:
            chunk *= factor
        if divisor != 1.0:
            chunk /= divisor
        np.rint(chunk, out=chunk)
        np.clip(chunk, 0, 255, out=chunk)
        out[start : start + CHUNK_PIXELS] = chunk
    return out.reshape(values.shape)


CHUNK_PIXELS = 1 << 18  # 2 MB of float64 per chunk


def _finite_float64(samples: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``samples`` as float64, NaN and infinities as 0 (as ``np.nan_to_num`` would)."""
    chunk = samples.astype(np.float64)
    if np.issubdtype(dtype, np.floating):
        chunk[~np.isfinite(chunk)] = 0.0
    return chunk


def _finite_range(flat: np.ndarray, dtype: np.dtype) -> tuple[float, float]:
    """Min and max with non-finite samples counted as 0, one chunk at a time."""
    if not np.issubdtype(dtype, np.floating):
        return float(flat.min()), float(flat.max())
    low, high = math.inf, -math.inf
    for start in range(0, flat.size, CHUNK_PIXELS):
        chunk = _finite_float64(flat[start : start + CHUNK_PIXELS], dtype)
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high
