"""Folder expansion that lists what it cannot use (issue 21 item 15), and the image reader's
memory on 16-bit files."""
from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtpg_aiaa.data import images as images_module
from mtpg_aiaa.data.image_files import list_image_files


def test_dangling_links_loops_fifos_and_folders_are_listed_with_a_reason(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.PNG", "sub/c.jpg", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "album.jpg").mkdir()
    (folder / "link.jpg").symlink_to(folder / "b.jpg")
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)

    files, refused = list_image_files(folder)
    assert [p.name for p in files] == ["a.PNG", "b.jpg", "link.jpg"]
    reasons = {p.name: reason for p, reason in refused}
    assert reasons["gone.jpg"].startswith("a dangling symlink (to ")
    assert reasons["loop.jpg"] == "a symlink loop"
    assert reasons["pipe.jpg"] == "a FIFO (named pipe)"
    assert reasons["album.jpg"] == "a folder"
    assert len(refused) == 4

    files, refused = list_image_files(folder, recursive=True)
    assert sorted(p.relative_to(folder).as_posix() for p in files) == ["a.PNG", "b.jpg", "link.jpg", "sub/c.jpg"]
    assert {p.name: reason for p, reason in refused}["up"] == "a symlink loop: this folder was already listed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_an_unreadable_subfolder_is_listed(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0)
    try:
        _, refused = list_image_files(tmp_path, recursive=True)
    finally:
        (tmp_path / "locked").chmod(stat.S_IRWXU)
    assert refused and refused[0][1].startswith("unreadable folder")


def reference_wide_to_uint8(image: Image.Image) -> np.ndarray:
    """The float64 conversion the reader used before (kept to pin the new one's output)."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N") or (image.mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode, values", [
    ("I;16", np.arange(65536, dtype=np.uint16).reshape(256, 256)),
    ("I", np.arange(65536, dtype=np.int32).reshape(256, 256) * 3),  # beyond 16 bits: stretched
    ("I", np.arange(65536, dtype=np.int32).reshape(256, 256)),  # 16-bit data decoded as I
    ("F", np.linspace(0, 1, 65536, dtype=np.float32).reshape(256, 256)),
    ("F", np.concatenate([np.linspace(-3, 7, 65533), [np.nan, np.inf, -np.inf]]).astype(np.float32).reshape(256, 256)),
    ("F", np.full((256, 256), 4.0, dtype=np.float32)),
])
def test_wide_images_convert_exactly_as_before(mode, values, monkeypatch):
    image = Image.fromarray(values, mode=mode) if mode != "I;16" else Image.frombytes("I;16", (256, 256), values.tobytes())
    monkeypatch.setattr(images_module, "CHUNK_PIXELS", 1000)  # many chunks, a ragged last one
    np.testing.assert_array_equal(images_module._wide_to_uint8(image), reference_wide_to_uint8(image))


def test_a_16_bit_image_converts_without_float64_copies_of_the_whole_image(tmp_path):
    side = 2048
    values = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    path = tmp_path / "deep.png"
    Image.frombytes("I;16", (side, side), values.tobytes()).save(path)
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        image = images_module.load_rgb_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.mode == "RGB" and image.size == (side, side)
    # the decoded 16-bit plane (8 MB), the uint8 plane, the RGB result (12 MB) and a chunk;
    # the float64 path held several 32 MB copies (peak above 100 MB)
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_safetensors_outputs_get_the_users_umask(tmp_path, umask):
    """Issue 21 item 15: safetensors' writer recreates the file 0600 whatever the umask."""
    import torch
    from safetensors.torch import save_file

    from mtpg_aiaa.fileio import atomic_write

    previous = os.umask(umask)
    try:
        written = atomic_write(tmp_path / "best.safetensors", lambda tmp: save_file({"w": torch.ones(1)}, tmp))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def test_the_scorer_lists_or_refuses_what_a_folder_holds_besides_images(make_smoke, tmp_path):
    """A dangling symlink and a FIFO named like images are never opened: skipped and listed with
    ``on_bad_image="skip"``, a one-line error naming the entry otherwise."""
    from mtpg_aiaa.api import create_scorer
    from mtpg_aiaa.data.errors import BadInputError

    smoke = make_smoke(4, 0)
    folder = tmp_path / "paintings"
    folder.mkdir()
    for name in ("0000.jpg", "0001.jpg"):
        (folder / name).write_bytes((Path(smoke["image_root"]) / name).read_bytes())
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(folder / "pipe.png")
    scorer = create_scorer(None, weights=smoke["ckpt"], device="cpu")
    result = scorer.score(folder, on_bad_image="skip")
    assert [Path(image).name for image in result.images] == ["0000.jpg", "0001.jpg"]
    assert sorted(Path(row["image"]).name for row in result.skipped) == ["gone.jpg", "pipe.png"]
    assert all(row["reason"].startswith("not an image file") for row in result.skipped)
    with pytest.raises(BadInputError, match="gone.jpg|pipe.png") as caught:
        scorer.score(folder)
    assert "\n" not in str(caught.value)
