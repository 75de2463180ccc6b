"""The 30 pretext-task manipulations: table, prompts, determinism and per-operation physics."""

import cv2
import numpy as np
import pytest

from mtpg_aiaa.models.mtpg.manipulations import (
    MANIPULATIONS,
    apply_manipulation,
    operation_groups,
    prompts,
    sample_op_ids,
)

ALL_IDS = range(30)


def _test_image(height=96, width=96, seed=0):
    """Smooth random colours plus a bright rectangle, a dark disc and mild texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (5, 5, 3)).astype(np.float32)
    pixels = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    pixels[height // 6 : height // 2, width // 8 : width // 2] = (235, 220, 40)
    cv2.circle(pixels, (2 * width // 3, 2 * height // 3), min(height, width) // 6, (20, 30, 90), -1)
    pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


IMAGE = _test_image()


def _apply(op_id, image=IMAGE, seed=0, other=None):
    return apply_manipulation(image, op_id, np.random.default_rng(seed), other=other)


def _mean_abs_change(out, image=IMAGE):
    return float(np.abs(out.astype(np.float64) - image).mean())


def _laplacian_energy(image):
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float((cv2.Laplacian(grey, cv2.CV_32F) ** 2).mean())


def _strictly_increasing(values):
    return all(a < b for a, b in zip(values, values[1:]))


# --- table, prompts, groups, sampling -------------------------------------------------


def test_table_has_30_entries_in_id_order():
    assert len(MANIPULATIONS) == 30
    assert [m.op_id for m in MANIPULATIONS] == list(ALL_IDS)
    assert MANIPULATIONS[29].operation == "none"
    assert MANIPULATIONS[27].params["angle"] == 45 and MANIPULATIONS[28].params["angle"] == -45


def test_prompts_are_30_unique_strings_naming_operation_and_strength():
    texts = prompts()
    assert len(texts) == 30 and len(set(texts)) == 30
    assert texts[12] == "a painting with mild gaussian blur"
    assert texts[11] == "a painting with strong color quantization"
    assert texts[27] == "a painting rotated 45 degrees counter-clockwise"
    assert texts[28] == "a painting rotated 45 degrees clockwise"
    assert texts[29] == "an unaltered painting"
    for m in MANIPULATIONS[:27]:
        assert ("mild", "medium", "strong")[m.strength] in m.prompt


def test_operation_groups_cover_every_id_in_strength_order():
    groups = operation_groups()
    assert len(groups) == 11
    assert groups["rotation"] == [27, 28] and groups["none"] == [29]
    three = [ids for name, ids in groups.items() if name not in ("rotation", "none")]
    assert len(three) == 9 and all(len(ids) == 3 for ids in three)
    assert sorted(i for ids in groups.values() for i in ids) == list(ALL_IDS)
    for name, ids in groups.items():
        assert [MANIPULATIONS[i].strength for i in ids] == list(range(len(ids)))
        assert all(MANIPULATIONS[i].operation == name for i in ids)


def test_sample_op_ids_gives_distinct_ids_reproducibly():
    for seed in range(20):
        ids = sample_op_ids(np.random.default_rng(seed))
        assert len(ids) == 3 and len(set(ids)) == 3
        assert all(isinstance(i, int) and 0 <= i < 30 for i in ids)
        assert ids == sample_op_ids(np.random.default_rng(seed))
    assert len(set(sample_op_ids(np.random.default_rng(0), k=30))) == 30


# --- every id --------------------------------------------------------------------------


@pytest.mark.parametrize("op_id", ALL_IDS)
def test_every_id_is_uint8_same_shape_deterministic_and_changes_the_image(op_id):
    first, second = _apply(op_id), _apply(op_id)
    assert first.dtype == np.uint8 and first.shape == IMAGE.shape
    np.testing.assert_array_equal(first, second)
    if op_id == 29:
        np.testing.assert_array_equal(first, IMAGE)
        assert first is not IMAGE
    else:
        assert not np.array_equal(first, IMAGE)


def test_every_id_works_at_224_and_on_non_square_and_flipped_inputs():
    big = _test_image(224, 224, seed=1)
    wide = _test_image(40, 64, seed=2)[:, ::-1]  # a strided view, as from a flip
    for op_id in ALL_IDS:
        assert _apply(op_id, big).shape == big.shape
        assert _apply(op_id, wide).shape == wide.shape


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError):
        _apply(30)
    with pytest.raises(ValueError):
        _apply(0, IMAGE[:31])
    with pytest.raises(ValueError):
        _apply(0, IMAGE.astype(np.float32))


# --- per-operation physics ---------------------------------------------------------------


def test_blur_removes_more_high_frequency_energy_with_larger_sigma():
    energies = [_laplacian_energy(_apply(i)) for i in operation_groups()["gaussian blur"]]
    assert _strictly_increasing([-e for e in energies])
    assert energies[0] < _laplacian_energy(IMAGE)


def test_noise_std_grows_with_sigma_and_clipping_only_shrinks_it():
    grey = np.full((96, 96, 3), 128, np.uint8)
    stds = []
    for i in operation_groups()["gaussian noise"]:
        sigma = MANIPULATIONS[i].params["sigma"]
        std = float((_apply(i, grey).astype(np.float64) - grey).std() / 255)
        assert std <= sigma * 1.02
        stds.append(std)
    assert stds[0] == pytest.approx(0.2, rel=0.05)  # clipping at +-2.5 sigma is negligible
    assert _strictly_increasing(stds)
    energies = [_laplacian_energy(_apply(i)) for i in operation_groups()["gaussian noise"]]
    assert _laplacian_energy(IMAGE) < energies[0] and _strictly_increasing(energies)


def test_exposure_multiplies_and_clips_so_brightness_rises():
    means = [IMAGE.mean()]
    for i in operation_groups()["overexposure"]:
        out = _apply(i)
        factor = MANIPULATIONS[i].params["factor"]
        expected = np.clip(np.rint(IMAGE.astype(np.float32) * factor), 0, 255)
        np.testing.assert_array_equal(out, expected.astype(np.uint8))
        means.append(out.mean())
    assert _strictly_increasing(means)


def test_colour_quantization_keeps_at_most_k_colours_and_error_grows_as_k_falls():
    errors = []
    for i in operation_groups()["color quantization"]:
        out = _apply(i)
        assert len(np.unique(out.reshape(-1, 3), axis=0)) <= MANIPULATIONS[i].params["k"]
        errors.append(_mean_abs_change(out))
    assert _strictly_increasing(errors)


@pytest.mark.parametrize("shape", [(96, 96), (64, 80)])
def test_crop_equals_the_resized_top_left_region(shape):
    image = _test_image(*shape)
    height, width = shape
    for i in operation_groups()["crop"]:
        keep = 1 - MANIPULATIONS[i].params["fraction"]
        region = image[: round(height * keep), : round(width * keep)]
        expected = cv2.resize(region, (width, height), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(_apply(i, image), expected)
    assert region.shape[:2] == (height // 2, width // 2)


def test_rotation_leaves_white_corners_and_turns_the_right_way():
    image = np.zeros((96, 96, 3), np.uint8)
    image[8:20, 42:54] = (255, 0, 0)  # a red marker above the centre
    for op_id, goes_left in ((27, True), (28, False)):
        out = _apply(op_id, image)
        for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
            np.testing.assert_array_equal(corner, [255, 255, 255])
        rows, cols = np.nonzero((out[..., 0] > 128) & (out[..., 1] < 128))
        assert rows.mean() < 47.5  # still above the centre
        assert (cols.mean() < 47.5) == goes_left  # counter-clockwise moves the top left


def test_cutmix_replaces_exactly_one_square_of_the_scaled_size():
    other = ((IMAGE.astype(np.int32) + 128) % 256).astype(np.uint8)  # differs everywhere
    for i, side in zip(operation_groups()["cutmix"], (14, 27, 55)):  # 32, 64, 128 * 96 / 224
        for seed in range(3):
            out = _apply(i, seed=seed, other=other)
            changed = np.any(out != IMAGE, axis=2)
            rows, cols = np.nonzero(changed)
            top, left = rows.min(), cols.min()
            assert changed.sum() == side * side
            assert (rows.max() - top + 1, cols.max() - left + 1) == (side, side)
            np.testing.assert_array_equal(out[changed], other[changed])


def test_cutmix_patch_sides_at_224_and_fallbacks():
    big = _test_image(224, 224, seed=3)
    other = 255 - big
    for i, side in zip(operation_groups()["cutmix"], (32, 64, 128)):
        assert np.any(_apply(i, big, other=other) != big, axis=2).sum() == side * side
    # Without `other`: a flipped, inverted copy; a few pixels may coincide with the input.
    changed = np.any(_apply(26) != IMAGE, axis=2)
    rows, cols = np.nonzero(changed)
    assert np.ptp(rows) < 55 and np.ptp(cols) < 55 and changed.sum() > 0.9 * 55 * 55
    # An `other` of another size is resized first.
    assert _apply(26, other=_test_image(50, 70, seed=4)).shape == IMAGE.shape


def test_lens_warp_keeps_the_centre_and_the_outside_and_grows_with_radius():
    image = _test_image(97, 97)  # odd side: an exact centre pixel
    diagonal = np.hypot(97, 97)
    ys, xs = np.mgrid[0:97, 0:97]
    distance = np.hypot(ys - 48, xs - 48)
    changes = []
    for i in operation_groups()["lens distortion"]:
        out = _apply(i, image)
        np.testing.assert_array_equal(out[48, 48], image[48, 48])
        outside = distance >= MANIPULATIONS[i].params["radius_fraction"] * diagonal
        np.testing.assert_array_equal(out[outside], image[outside])
        changes.append(_mean_abs_change(out, image))
    assert _strictly_increasing(changes)
    # Even side: the centre lies between pixels, so on a smooth image it is kept only
    # approximately (each of the four central pixels samples about 0.26 px inwards).
    smooth = cv2.resize(IMAGE[::24, ::24], (96, 96), interpolation=cv2.INTER_CUBIC)
    out = _apply(17, smooth)
    assert np.abs(out[47:49, 47:49].astype(int) - smooth[47:49, 47:49]).max() <= 4


def test_stylization_changes_and_darkens_more_as_sigma_r_falls():
    # OpenCV returns smooth(x) * (1 - |gradient|); small sigma_r keeps more edges to darken.
    ids = operation_groups()["stylization"]
    assert [MANIPULATIONS[i].params["sigma_r"] for i in ids] == [0.6, 0.3, 0.1]
    outs = [_apply(i) for i in ids]
    assert _strictly_increasing([_mean_abs_change(out) for out in outs])
    assert _strictly_increasing([-out.mean() for out in outs])
    assert outs[0].mean() < IMAGE.mean()


def test_pencil_sketch_gets_paler_with_fewer_strokes_as_sigma_r_grows():
    ids = operation_groups()["pencil sketch"]
    assert [MANIPULATIONS[i].params["sigma_r"] for i in ids] == [0.1, 0.4, 0.6]
    greys = [cv2.cvtColor(_apply(i), cv2.COLOR_RGB2GRAY) for i in ids]
    assert _strictly_increasing([g.mean() for g in greys])
    assert _strictly_increasing([-(g < 100).mean() for g in greys])
    assert all(not np.array_equal(a, b) for a, b in zip(greys, greys[1:]))
