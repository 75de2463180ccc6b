"""Decoding JPEG batches on the scoring device (eval.decode=device) against the PIL path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from helpers import load_script
from mtpg_aiaa.data import AestheticsDataset, collate_samples, read_score_table
from mtpg_aiaa.data.device_decoding import DeviceDecodingLoader, EncodedImageDataset, collate_encoded
from mtpg_aiaa.transforms import IMAGENET_STD, build_transform

write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data


SIZES = ((320, 240), (180, 300), (224, 224), (97, 61), (500, 375))


def _paintings(root: Path, sizes=SIZES) -> dict:
    """Smoke data with JPEGs of ``sizes`` (width, height), the last one a PNG under a .jpg
    name (the PIL fallback)."""
    smoke = write_smoke_data(root, num_images=len(sizes), seed=2)
    rng = np.random.default_rng(0)
    images = sorted(Path(smoke["image_root"]).glob("*.jpg"))
    for path, (width, height) in zip(images, sizes):
        small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=90)
    Image.open(images[-1]).save(images[-1].with_suffix(".png"))
    images[-1].with_suffix(".png").rename(images[-1])
    return smoke


def decoded_beside_pil(smoke: dict, device: torch.device) -> tuple[dict, dict, torch.Tensor]:
    """One batch of every image decoded on ``device`` and one through PIL in the workers,
    and their |difference| in levels of 255 (``[B, 3, 224, 224]``, on the CPU)."""
    table = read_score_table(smoke["csv"])
    reference = AestheticsDataset(table, smoke["image_root"], build_transform("official", 224))
    expected = next(iter(DataLoader(reference, batch_size=len(table), collate_fn=collate_samples)))
    encoded = EncodedImageDataset(table, smoke["image_root"], None)
    loader = DeviceDecodingLoader(DataLoader(encoded, batch_size=len(table), collate_fn=collate_encoded), device, 224)
    got = next(iter(loader))
    assert got["image"].device.type == device.type and got["image"].shape == expected["image"].shape
    levels = ((got["image"].cpu() - expected["image"]) * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255).abs()
    return got, expected, levels


def test_device_decoding_matches_pil_within_one_level(tmp_path):
    got, expected, levels = decoded_beside_pil(_paintings(tmp_path), torch.device("cpu"))
    assert got["image"].shape == (5, 3, 224, 224)
    assert levels.max() <= 1.01  # libjpeg on both sides here; nvJPEG on CUDA adds a few levels (docs)
    assert torch.equal(got["index"], expected["index"]) and got["image_name"] == expected["image_name"]


def test_a_missing_image_is_named_and_skipped_as_on_the_pil_path(tmp_path):
    smoke = _paintings(tmp_path)
    table = read_score_table(smoke["csv"])
    missing = Path(smoke["image_root"]) / table["image"][1]
    missing.unlink()
    encoded = EncodedImageDataset(table, smoke["image_root"], None, on_bad_image="skip")
    batch = next(iter(DeviceDecodingLoader(DataLoader(encoded, batch_size=5, collate_fn=collate_encoded),
                                           torch.device("cpu"), 224)))  # fmt: skip
    assert batch["image"].shape[0] == 4
    assert [row["index"] for row in batch["skipped"]] == [1] and str(missing) in batch["skipped"][0]["reason"]


def test_test_py_with_device_decoding_scores_as_the_pil_path(tmp_path):
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from mtpg_aiaa.models.mtpg.checkpoint import save_official_checkpoint
    from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg
    from test import evaluate

    smoke = _paintings(tmp_path / "data")
    torch.manual_seed(3)
    ckpt = save_official_checkpoint(build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")), tmp_path / "model_save.pt")
    predictions = {}
    for decode in ("cpu", "device"):
        root = Path(__file__).resolve().parents[1] / "configs"
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            cfg = compose("test", overrides=[f"ckpt={ckpt}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
                                             "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=0", "device=cpu",
                                             f"eval.decode={decode}"])  # fmt: skip
        metrics = evaluate(cfg, tmp_path / decode)
        predictions[decode] = pd.read_csv(tmp_path / decode / "predictions.csv")["pred_0_10"].to_numpy()
        assert set(metrics["time_split_s"]) >= {"start_up", "weights", "waiting_for_decoding", "model", "writing"}
    assert len(predictions["device"]) == 5
    assert abs(predictions["device"] - predictions["cpu"]).max() <= 2e-3
