"""Preprocessing by name: official (squash, ImageNet stats) and clip (crop, CLIP stats)."""

import numpy as np
import pytest
import torch
from PIL import Image

from mtpg_aiaa.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TRANSFORM_NAMES,
    build_transform,
)


def _two_colour_image(width=100, height=50):
    """Left half red, right half blue, with some noise so resizing is not trivial."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] += 200
    pixels[:, width // 2 :, 2] += 200
    return Image.fromarray(pixels)


def _normalise(pil_image, mean, std):
    """By hand: uint8 HWC -> float CHW on [0, 1] -> (x - mean) / std."""
    pixels = torch.from_numpy(np.asarray(pil_image).copy()).permute(2, 0, 1).float() / 255
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_official_eval_squashes_to_square_without_cropping():
    image = _two_colour_image(100, 50)
    output = build_transform("official")(image)
    expected = _normalise(image.resize((224, 224), Image.BILINEAR), IMAGENET_MEAN, IMAGENET_STD)
    assert output.shape == (3, 224, 224) and output.dtype == torch.float32
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=0)
    # Nothing cropped: red still fills the whole left half, blue the right half.
    red, blue = output[0], output[2]
    assert (red[:, :100] > blue[:, :100]).all() and (blue[:, 124:] > red[:, 124:]).all()


def test_official_eval_honours_image_size():
    assert build_transform("official", image_size=336)(_two_colour_image()).shape == (3, 336, 336)


@pytest.mark.parametrize("image_size, resized", [(224, 256), (336, 384)])
def test_official_train_is_a_flipped_or_plain_crop_of_the_square_resize(image_size, resized):
    image = _two_colour_image(90, 60)
    base = _normalise(image.resize((resized, resized), Image.BILINEAR), IMAGENET_MEAN, IMAGENET_STD)
    torch.manual_seed(0)
    transform = build_transform("official", image_size=image_size, train=True)
    for _ in range(3):
        output = transform(image)
        assert output.shape == (3, image_size, image_size)
        assert _is_window_of(output, base) or _is_window_of(output, base.flip(-1))


def _is_window_of(window, full):
    size = window.shape[-1]
    # Candidates: positions whose pixel equals the window's top-left pixel.
    corner_matches = (full - window[:, :1, :1]).abs().amax(dim=0) < 1e-6
    for top, left in corner_matches.nonzero().tolist():
        candidate = full[:, top : top + size, left : left + size]
        if candidate.shape == window.shape and torch.allclose(window, candidate, atol=1e-6):
            return True
    return False


def test_clip_eval_resizes_short_side_then_center_crops_with_clip_stats():
    image = _two_colour_image(100, 50)
    output = build_transform("clip")(image)
    # Short side 50 -> 224, so 100 -> 448; the centre crop drops 112 columns each side.
    resized = image.resize((448, 224), Image.BICUBIC).crop((112, 0, 336, 224))
    torch.testing.assert_close(output, _normalise(resized, CLIP_MEAN, CLIP_STD), atol=1e-6, rtol=0)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(output, _normalise(resized, IMAGENET_MEAN, IMAGENET_STD))


@pytest.mark.parametrize("width, height", [(100, 50), (50, 100), (60, 60)])
def test_clip_train_is_random_for_any_aspect_ratio(width, height):
    image = _two_colour_image(width, height)
    transform = build_transform("clip", image_size=64, train=True)
    torch.manual_seed(0)
    outputs = [transform(image) for _ in range(4)]
    assert all(output.shape == (3, 64, 64) for output in outputs)
    assert not all(torch.equal(outputs[0], output) for output in outputs[1:])


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as error:
        build_transform("imagenet")
    for name in TRANSFORM_NAMES:
        assert name in str(error.value)


def test_bad_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        build_transform("official", image_size=0)
