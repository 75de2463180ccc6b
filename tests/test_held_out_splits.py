"""Held-out toy splits (split_seed), the seeded standardisation sample and the commands
of mtpg_aiaa/experiments/mtpg/ablate.py (its paired bootstrap: tests/test_bootstrap.py) (issue 12, items 1, 2 and 4)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtpg_aiaa.data import read_score_table
from mtpg_aiaa.data.toy import make_toy_dataset, split_indices
from mtpg_aiaa.engine.tasks.mtpg.standardization import sample_rows as standardization_rows
from mtpg_aiaa.models.mtpg.losses import score_losses

SPLITS = ("train", "val", "test")
REPO = Path(__file__).resolve().parents[1]


def _load_ablate():
    from mtpg_aiaa.experiments.mtpg import ablate

    return ablate


def _members(paths):
    return {split: set(read_score_table(paths[f"{split}_csv"]).image) for split in SPLITS}


def test_split_seed_resplits_the_same_pictures(tmp_path):
    root = tmp_path / "toy"
    default = make_toy_dataset(root, num_images=40, progress=False)
    before = _members(default)
    images = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "images").iterdir()}
    assert json.loads((root / ".complete").read_text()).get("split_seed") is None  # old builds stay valid

    resplit = make_toy_dataset(root, num_images=40, split_seed=7, progress=False)
    after = _members(resplit)
    assert resplit["built"] and after != before
    assert set().union(*after.values()) == set().union(*before.values())  # every picture, once
    assert sum(map(len, after.values())) == 40
    # The images are kept byte for byte and untouched (a feature cache keyed on mtime stays valid).
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "images").iterdir()} == images
    factors = pd.read_csv(root / "factors.csv")
    assert dict(zip(factors.image, factors.split)) == {name: s for s, names in after.items() for name in names}
    # A picture's score and description do not depend on the split.
    old = pd.concat([read_score_table(default[f"{s}_csv"]) for s in SPLITS]).set_index("image").sort_index()
    new = pd.concat([read_score_table(resplit[f"{s}_csv"]) for s in SPLITS]).set_index("image").sort_index()
    pd.testing.assert_frame_equal(old[["score", "description"]], new[["score", "description"]])

    assert make_toy_dataset(root, num_images=40, split_seed=7, progress=False)["built"] is False
    back = make_toy_dataset(root, num_images=40, split_seed=0, progress=False)
    assert _members(back) == before


def test_interrupted_resplit_is_redone(tmp_path, monkeypatch):
    from mtpg_aiaa.data import toy

    root = tmp_path / "toy"
    make_toy_dataset(root, num_images=30, progress=False)
    real = toy._write_csv

    def failing(path, columns, rows):
        if path.name == "val_set.csv":
            raise KeyboardInterrupt
        real(path, columns, rows)

    monkeypatch.setattr(toy, "_write_csv", failing)
    with pytest.raises(KeyboardInterrupt):
        make_toy_dataset(root, num_images=30, split_seed=5, progress=False)
    monkeypatch.setattr(toy, "_write_csv", real)
    paths = make_toy_dataset(root, num_images=30, split_seed=5, progress=False)
    assert paths["built"]
    expected = split_indices(30, 5)
    assert _members(paths)["val"] == {f"{i:05d}.jpg" for i in expected["val"]}


def test_standardisation_rows_are_a_seeded_random_sample():
    assert standardization_rows(10, 4096, seed=0) == list(range(10))
    rows = standardization_rows(10_000, 4096, seed=3)
    assert len(set(rows)) == 4096 and rows == sorted(rows) and rows == standardization_rows(10_000, 4096, seed=3)
    assert max(rows) > 4096  # not the table's first rows
    assert rows != standardization_rows(10_000, 4096, seed=4)


def test_fidelity_temperature_reaches_the_loss():
    torch.manual_seed(0)
    outputs = {"score": torch.rand(8), "logits": torch.randn(8, 5), "probs": torch.rand(8, 5)}
    target = torch.rand(8)
    sharp = score_losses(outputs, target, {"fidelity": 1.0}, fidelity_temperature=0.01)["fidelity"]
    soft = score_losses(outputs, target, {"fidelity": 1.0}, fidelity_temperature=1.0)["fidelity"]
    assert not torch.isclose(sharp, soft)


def test_ablation_commands_share_stage_one_and_test_on_the_variant_inputs():
    ablate = _load_ablate()
    variant = ablate.VARIANTS["image_only"]
    pre, fine, test = ablate.commands(variant, 101, Path("outputs"), "python", test=True)
    assert "data.build.split_seed=101" in pre and "data.build.split_seed=101" in test
    assert "run_name=quickstart-pretrain-split101" in pre
    assert "init_from=outputs/train/quickstart-pretrain-split101" in fine
    assert "data.description_column=none" in fine and "data.description_column=none" in test
