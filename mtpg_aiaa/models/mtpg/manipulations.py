"""The 30 image manipulations of the BAID/SAAN pretext task, with text prompts.

Each manipulation is a pure function of an RGB ``uint8`` array ``[H, W, 3]`` (any
``H, W >= 32``; the pretext task uses 224x224) returning a new array of the same shape
and dtype. Only Gaussian noise and CutMix draw random numbers, from the
``numpy.random.Generator`` handed in, so a fixed seed gives a fixed output.

Ids follow the BAID/SAAN pretext-task table: ten operations with three strengths each
(rotation has two directions), then id 29, the identity.
Within an operation ids go mild -> strong, i.e. the distance of the output to the
input grows with the id. For OpenCV's ``stylization`` that means sigma_r 0.6, 0.3, 0.1
(the original BAID order, not ascending sigma_r): it darkens the edge-preserving
smoothed image by its gradient magnitude, and a small sigma_r keeps more edges and
texture to darken; on photographs and synthetic images alike, the mean absolute change
and the darkening fall as sigma_r grows. ``pencilSketch`` keeps the table's 0.1, 0.4,
0.6: a larger sigma_r gives fewer strokes and a paler sketch (its pixel distance to the
input is not monotonic on every image, but its brightness is).

The prompts (e.g. "a painting with strong gaussian blur") are our design: SAAN
classified the ids; we name each manipulation in text so pretraining can match images
to prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "Manipulation", "MANIPULATIONS", "STRENGTH_WORDS", "apply_manipulation", "prompts",
    "operation_groups", "sample_op_ids", "stylize", "add_gaussian_noise", "crop_top_left",
    "quantize_colors", "gaussian_blur", "lens_distort", "pencil_sketch", "overexpose",
    "cutmix", "rotate",
]

STRENGTH_WORDS = ("mild", "medium", "strong")
MIN_SIDE = 32
# CutMix patch sides in the table are for 224x224 inputs; other sizes scale them.
_REFERENCE_SIDE = 224
# k-means must not depend on the caller's generator: the same image always gets the
# same palette, whatever else was sampled before it.
_KMEANS_SEED = 0
_KMEANS_SAMPLE = 4096
_KMEANS_ITERATIONS = 10

# Prompt templates by operation; "{s}" is the strength word.
_PROMPTS = {
    "stylization": "a painting with {s} stylization",
    "gaussian noise": "a painting with {s} gaussian noise",
    "crop": "a painting with a {s} crop",
    "color quantization": "a painting with {s} color quantization",
    "gaussian blur": "a painting with {s} gaussian blur",
    "lens distortion": "a painting with {s} lens distortion",
    "pencil sketch": "a painting with a {s} pencil sketch effect",
    "overexposure": "a painting with {s} overexposure",
    "cutmix": "a painting with a {s} cutmix patch",
}


@dataclass(frozen=True)
class Manipulation:
    """One entry of the pretext-task table.

    Attributes:
        op_id: 0-29, the table's id.
        operation: operation name ("stylization", "gaussian noise", "crop",
            "color quantization", "gaussian blur", "lens distortion", "pencil sketch",
            "overexposure", "cutmix", "rotation" or "none").
        strength: 0 mild, 1 medium, 2 strong. Rotation: 0 for +45 degrees
            (counter-clockwise), 1 for -45 degrees (clockwise); a direction, not a
            strength. Identity: 0.
        params: keyword arguments of the operation's function (read-only by convention).
    """

    op_id: int
    operation: str
    strength: int
    params: dict = field(default_factory=dict, hash=False)

    @property
    def prompt(self) -> str:
        """Text naming the operation and its strength.

        ``"a painting with {mild|medium|strong} <operation>"`` with a few natural
        variants ("a painting with a strong crop", "... a mild cutmix patch",
        "... a medium pencil sketch effect"); rotation gives "a painting rotated 45
        degrees counter-clockwise" (+45) or "... clockwise" (-45); identity gives
        "an unaltered painting".
        """
        if self.operation == "none":
            return "an unaltered painting"
        if self.operation == "rotation":
            direction = "counter-clockwise" if self.params["angle"] > 0 else "clockwise"
            return f"a painting rotated 45 degrees {direction}"
        return _PROMPTS[self.operation].format(s=STRENGTH_WORDS[self.strength])


def _three(first_id: int, operation: str, name: str, values) -> list[Manipulation]:
    return [Manipulation(first_id + i, operation, i, {name: v}) for i, v in enumerate(values)]


MANIPULATIONS: tuple[Manipulation, ...] = tuple(
    _three(0, "stylization", "sigma_r", (0.6, 0.3, 0.1))  # see module docstring
    + _three(3, "gaussian noise", "sigma", (0.2, 0.4, 0.8))
    + _three(6, "crop", "fraction", (1 / 4, 1 / 3, 1 / 2))
    + _three(9, "color quantization", "k", (64, 32, 8))
    + _three(12, "gaussian blur", "sigma", (0.4, 0.8, 2.0))
    + _three(15, "lens distortion", "radius_fraction", (1 / 8, 1 / 4, 1 / 2))
    + _three(18, "pencil sketch", "sigma_r", (0.1, 0.4, 0.6))
    + _three(21, "overexposure", "factor", (1.5, 2.0, 2.5))
    + _three(24, "cutmix", "patch", (32, 64, 128))
    + [Manipulation(27, "rotation", 0, {"angle": 45.0})]
    + [Manipulation(28, "rotation", 1, {"angle": -45.0})]
    + [Manipulation(29, "none", 0, {})]
)


def prompts() -> list[str]:
    """The 30 prompts in id order."""
    return [m.prompt for m in MANIPULATIONS]


def operation_groups() -> dict[str, list[int]]:
    """Operation name -> its ids in strength order (mild first), in table order.

    Nine groups of three, ``"rotation": [27, 28]`` (two directions, not an ordering:
    leave it out of a strength-ordering loss) and ``"none": [29]``.
    """
    groups: dict[str, list[int]] = {}
    for m in MANIPULATIONS:
        groups.setdefault(m.operation, []).append(m.op_id)
    return groups


def sample_op_ids(rng: np.random.Generator, k: int = 3) -> list[int]:
    """``k`` distinct ids drawn uniformly from 0-29 (the pretext task uses three)."""
    return [int(i) for i in rng.choice(len(MANIPULATIONS), size=k, replace=False)]


def apply_manipulation(
    image: np.ndarray, op_id: int, rng: np.random.Generator, other: np.ndarray | None = None
) -> np.ndarray:
    """Apply manipulation ``op_id`` to an RGB image.

    Args:
        image: uint8 [H, W, 3], RGB, H and W >= 32.
        op_id: 0-29.
        rng: source of randomness for noise and CutMix (unused by the others).
        other: the image CutMix takes its patch from (see :func:`cutmix`); ignored
            by every other operation.

    Returns:
        A new uint8 [H, W, 3] array; identity returns a copy of ``image``.
    """
    if not 0 <= op_id < len(MANIPULATIONS):
        raise ValueError(f"op_id must be in 0..{len(MANIPULATIONS) - 1}, got {op_id}")
    image = _check_image(image)
    m = MANIPULATIONS[op_id]
    if m.operation == "gaussian noise":
        return add_gaussian_noise(image, rng=rng, **m.params)
    if m.operation == "cutmix":
        return cutmix(image, rng=rng, other=other, **m.params)
    if m.operation == "none":
        return image.copy()
    return _DETERMINISTIC[m.operation](image, **m.params)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image sides must be >= {MIN_SIDE}, got {image.shape[:2]}")
    # OpenCV rejects strided views such as flipped arrays.
    return np.ascontiguousarray(image)


def stylize(image: np.ndarray, sigma_r: float, sigma_s: float = 50.0) -> np.ndarray:
    """OpenCV edge-preserving stylization; a smaller ``sigma_r`` changes the image more."""
    # OpenCV expects BGR; stylization is channel-symmetric but stay faithful to the API.
    out = cv2.stylization(image[..., ::-1].copy(), sigma_s=sigma_s, sigma_r=sigma_r)
    return np.ascontiguousarray(out[..., ::-1])


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, sigma^2) to pixels scaled to [0, 1], clip to [0, 1], round back to uint8."""
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    noisy = np.clip(image.astype(np.float32) / 255.0 + noise, 0.0, 1.0)
    return np.rint(noisy * 255.0).astype(np.uint8)


def crop_top_left(image: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the top-left region without ``fraction`` of each side, resize back (bilinear).

    The kept region is ``image[:round(H * (1 - fraction)), :round(W * (1 - fraction))]``.
    """
    height, width = image.shape[:2]
    kept = image[: round(height * (1 - fraction)), : round(width * (1 - fraction))]
    return cv2.resize(kept, (width, height), interpolation=cv2.INTER_LINEAR)


def quantize_colors(image: np.ndarray, k: int) -> np.ndarray:
    """Replace every pixel by the nearest of ``k`` k-means colours (so <= k colours).

    Lloyd's k-means (k-means++ init, 10 iterations, RGB distance) runs on a subsample
    of 4096 pixels drawn with a fixed seed, then every pixel takes its nearest centre.
    The result depends on the image only, never on a caller's generator.
    """
    pixels = image.reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(_KMEANS_SEED)
    sample = pixels[rng.choice(len(pixels), size=min(len(pixels), _KMEANS_SAMPLE), replace=False)]
    centres = _kmeans_plus_plus(sample, k, rng)
    labels = None
    for _ in range(_KMEANS_ITERATIONS):
        new_labels = _nearest_centre(sample, centres)
        if labels is not None and np.array_equal(labels, new_labels):
            break
        labels = new_labels
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, sample[:, c], minlength=k) for c in range(3)], axis=1)
        filled = counts > 0  # an empty cluster keeps its previous centre
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    palette = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    return palette[_nearest_centre(pixels, centres)].reshape(image.shape)


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = np.empty((k, 3), dtype=np.float32)
    centres[0] = points[rng.integers(len(points))]
    closest = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = closest.sum()
        # All points already coincide with a centre (few distinct colours): any will do.
        if total > 0:
            index = rng.choice(len(points), p=closest / total)
        else:
            index = rng.integers(len(points))
        centres[i] = points[index]
        closest = np.minimum(closest, ((points - centres[i]) ** 2).sum(axis=1))
    return centres


def _nearest_centre(points: np.ndarray, centres: np.ndarray, chunk: int = 1024) -> np.ndarray:
    # |p - c|^2 without the |p|^2 term, which does not change the argmin. Chunks keep
    # the [chunk, k] score matrix in cache: about 5x faster than one [N, k] matrix.
    squared_norms = (centres**2).sum(axis=1)
    labels = np.empty(len(points), dtype=np.intp)
    for start in range(0, len(points), chunk):
        scores = points[start : start + chunk] @ centres.T
        scores *= -2.0
        scores += squared_norms
        labels[start : start + chunk] = scores.argmin(axis=1)
    return labels


def gaussian_blur(image: np.ndarray, sigma: float, ksize: int = 5) -> np.ndarray:
    """Gaussian blur with a ``ksize`` x ``ksize`` kernel (OpenCV's reflect-101 border)."""
    return cv2.GaussianBlur(image, (ksize, ksize), sigmaX=sigma, sigmaY=sigma)


def lens_distort(image: np.ndarray, radius_fraction: float) -> np.ndarray:
    """Convex-lens bulge inside a disc of radius ``radius_fraction * diagonal`` at the centre.

    An output pixel at distance ``r < R`` from the centre samples the input at
    ``R * (2 / pi) * arcsin(r / R)`` along the same ray: the centre is magnified
    ``pi / 2`` times, the rim squeezed, and the map is continuous at ``r = R``. The
    centre maps to itself and pixels outside the disc are untouched (bilinear remap).
    """
    height, width = image.shape[:2]
    radius = radius_fraction * float(np.hypot(height, width))
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = ys - cy, xs - cx
    r = np.sqrt(dx**2 + dy**2)
    inside = r < radius
    scale = np.ones_like(r)
    # r_src / r; the limit at r -> 0 is 2 / pi.
    r_in = np.maximum(r[inside], 1e-6)
    scale[inside] = radius * (2 / np.pi) * np.arcsin(r_in / radius) / r_in
    map_x = np.where(inside, cx + dx * scale, xs).astype(np.float32)
    map_y = np.where(inside, cy + dy * scale, ys).astype(np.float32)
    return cv2.remap(
        image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def pencil_sketch(
    image: np.ndarray, sigma_r: float, sigma_s: float = 100.0, shade_factor: float = 0.02
) -> np.ndarray:
    """OpenCV colour pencil sketch; a larger ``sigma_r`` gives fewer strokes, paler output."""
    # pencilSketch works in YCrCb from BGR, so channel order matters here.
    _, colour = cv2.pencilSketch(
        image[..., ::-1].copy(), sigma_s=sigma_s, sigma_r=sigma_r, shade_factor=shade_factor
    )
    return np.ascontiguousarray(colour[..., ::-1])


def overexpose(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every pixel by ``factor``, round and clip to 255."""
    return np.clip(np.rint(image.astype(np.float32) * np.float32(factor)), 0, 255).astype(np.uint8)


def cutmix(
    image: np.ndarray, patch: int, rng: np.random.Generator, other: np.ndarray | None = None
) -> np.ndarray:
    """Paste a square from ``other`` at a random location of ``image``.

    The side is ``round(patch * min(H, W) / 224)`` (the table's sizes are for 224x224),
    clamped to [1, min(H, W)]. As in CutMix, the square comes from the same location of
    ``other``, which is first resized (bilinear) to ``image``'s size when it differs.
    Without ``other``, the patch comes from ``255 - image`` flipped left-right, so the
    pasted square is visibly foreign content even for a single image.

    Args:
        image: uint8 [H, W, 3].
        patch: patch side for a 224x224 image.
        rng: draws the top-left corner, uniform over positions that fit.
        other: uint8 [h, w, 3] RGB image, or None.
    """
    height, width = image.shape[:2]
    if other is None:
        source = 255 - image[:, ::-1]
    else:
        source = _check_image(other)
        if source.shape != image.shape:
            source = cv2.resize(source, (width, height), interpolation=cv2.INTER_LINEAR)
    side = int(np.clip(round(patch * min(height, width) / _REFERENCE_SIDE), 1, min(height, width)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    out = image.copy()
    out[top : top + side, left : left + side] = source[top : top + side, left : left + side]
    return out


def rotate(image: np.ndarray, angle: float, scale: float = 0.8) -> np.ndarray:
    """Rotate about the centre by ``angle`` degrees (positive = counter-clockwise on
    screen, OpenCV's convention), shrink by ``scale`` and fill the border with white."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, scale)
    return cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255),
    )


# Operations that need neither a generator nor a second image.
_DETERMINISTIC = {
    "stylization": stylize,
    "crop": crop_top_left,
    "color quantization": quantize_colors,
    "gaussian blur": gaussian_blur,
    "lens distortion": lens_distort,
    "pencil sketch": pencil_sketch,
    "overexposure": overexpose,
    "rotation": rotate,
}
