"""The training split of the feature cache held as device tensors (issue #11, item 4)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import load_script
from mtpg_aiaa.engine.tasks.mtpg.finetune import FeatureCacheOptions, FinetuneTask
from mtpg_aiaa.models.mtpg.feature_cache import CachedFeatureDataset, collate_features
from mtpg_aiaa.models.mtpg.feature_table import DeviceFeatureTable

from test_feature_cache import ALL_LOSSES, score_table, tiny_model  # noqa: E402

write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    return write_smoke_data(tmp_path_factory.mktemp("smoke"), num_images=6, seed=4)


def task(smoke: dict, cache_dir: Path, on_device, device: str = "cpu") -> FinetuneTask:
    table = score_table(smoke)
    table = table.iloc[[0, 1, 2, 3, 4, 5, 0, 2]].reset_index(drop=True)  # rows sharing a cache entry
    options = FeatureCacheOptions(enabled="true", dir=str(cache_dir), on_device=on_device)
    return FinetuneTask(tiny_model("official").to(device), table, None, smoke["image_root"], ALL_LOSSES,
                        eval_batch_size=4, num_workers=0, augment=False, feature_cache=options, progress=False)  # fmt: skip


def assert_table_serves_the_file_batches(table: DeviceFeatureTable, files: CachedFeatureDataset, device: str) -> None:
    """A batch of ``table`` (through DataLoader, which hands ``__getitems__`` the batch's
    indices) equals the file-per-sample path's, its features on ``device``."""
    assert isinstance(files, CachedFeatureDataset) and isinstance(table, DeviceFeatureTable)
    assert len(table) == len(files) == 8 and table.features["image"].shape[0] == 6  # one row per distinct entry
    rows = [7, 0, 3, 6]
    expected = collate_features([files[i] for i in rows])
    got = next(iter(DataLoader(table, batch_size=4, sampler=rows, collate_fn=lambda batch: batch)))
    assert set(got["features"]) == set(expected["features"])
    for name, value in expected["features"].items():
        assert got["features"][name].device.type == device, name
        assert torch.equal(got["features"][name].cpu(), value.cpu()), name
    for key in ("target", "score", "index"):
        assert torch.equal(got[key].cpu(), expected[key].cpu()), key
    assert got["image_name"] == expected["image_name"]


def test_device_table_batches_equal_the_file_per_sample_batches(smoke, tmp_path):
    files = task(smoke, tmp_path, on_device=False).train_dataset
    table = task(smoke, tmp_path, on_device=True).train_dataset
    assert_table_serves_the_file_batches(table, files, "cpu")


def test_on_device_auto_keeps_the_file_path_on_a_cpu_and_token_features_refuse(smoke, tmp_path):
    assert isinstance(task(smoke, tmp_path, on_device="auto").train_dataset, CachedFeatureDataset)
    table = score_table(smoke)
    options = FeatureCacheOptions(enabled="true", dir=str(tmp_path), on_device=True)
    with pytest.raises(ValueError, match="fixed-size features"):
        FinetuneTask(tiny_model("token"), table, None, smoke["image_root"], ALL_LOSSES, eval_batch_size=4,
                     num_workers=0, augment=False, feature_cache=options, progress=False)  # fmt: skip
