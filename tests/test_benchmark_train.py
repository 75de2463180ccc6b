"""scripts/benchmark_train.py: a tiny end-to-end run of its three setups on CPU."""
from __future__ import annotations

import gc
import json

import torch

from helpers import load_script

benchmark_train = load_script("scripts/benchmark_train.py")


def test_three_setups_train_and_the_cached_one_on_features(tmp_path):
    out = tmp_path / "result.json"
    threads = torch.get_num_threads()
    benchmark_train.main(["--model", "tiny", "--data", "smoke", "--steps", "1", "--rounds", "1", "--batch-size", "4",
                          "--workers", "0", "--device", "cpu", "--no-memory", "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    setups = result["setups"]
    assert list(setups) == ["cached", "uncached-frozen", "full"]
    for row in setups.values():
        assert row["timed_steps"] == 1 and row["steps_per_s"] > 0
        assert row["images_per_s"] == row["steps_per_s"] * 4
    assert setups["cached"]["cached"] and setups["cached"]["inputs"] == "cached features"
    assert not setups["uncached-frozen"]["cached"] and not setups["uncached-frozen"]["augment"]
    assert not setups["full"]["cached"] and setups["full"]["freeze"] == "full"
    assert setups["full"]["trainable_params"] > setups["uncached-frozen"]["trainable_params"]
    build = result["cache_build"]
    assert build["built"] == result["run"]["training_images"] and build["images_per_s"] > 0
    assert set(result["ratios"]) == {"cached / uncached-frozen", "uncached-frozen / full"}
    # same weights, inputs and batch order: the cached losses are the uncached ones
    assert result["loss_check"]["steps"] == 3 and result["loss_check"]["max_abs_diff"] < 1e-5
    assert torch.get_num_threads() == threads  # the caller's settings are restored


def test_peak_rss_counts_memory_touched_during_the_work():
    # Free an earlier test's cyclic garbage first: collected during the work, it would lower
    # the resident set by more than the work adds (seen in a full run: peak 0).
    gc.collect()
    held = []
    peak = benchmark_train._peak_rss_mb(lambda: held.append(torch.ones(64 * 2**20 // 4)))
    assert 50 < peak < 1000
