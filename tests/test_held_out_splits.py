"""Held-out toy splits (split_seed), the seeded standardisation sample, and the commands and the
paired bootstrap of mtpg_aiaa/experiments/mtpg/ablate.py (issue 12, items 1, 2 and 4; the
bootstrap itself: tests/test_bootstrap.py)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtpg_aiaa.data import read_score_table
from mtpg_aiaa.data.toy import make_toy_dataset, split_indices
from mtpg_aiaa.engine.tasks.mtpg.standardization import sample_rows as standardization_rows
from mtpg_aiaa.eval.bootstrap import paired_bootstrap
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


def test_ablation_report_pairs_variants_with_the_two_level_bootstrap(tmp_path):
    """The report's paired differences are the one bootstrap's, seeds then images, on the
    test images each split seed's two variants share (joined by image, in either order)."""
    ablate = _load_ablate()
    rng = np.random.default_rng(0)
    a, b = ablate.VARIANTS["quickstart"], ablate.VARIANTS["image_only"]
    expected = {"a": [], "b": [], "t": []}
    for split_seed in (101, 102):
        images = [f"{split_seed}_{i}.jpg" for i in range(40)]
        score = rng.normal(size=40)
        for variant, noise in ((a, 0.3), (b, 1.0)):
            dirs = ablate.run_dirs(variant, split_seed, tmp_path)
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            pred = score + noise * rng.normal(size=40)
            order = rng.permutation(40) if variant is b else np.arange(40)
            pd.DataFrame({"image": np.array(images)[order], "score": score[order], "pred": pred[order]}).to_csv(
                dirs["test"] / "predictions.csv", index=False)
            (dirs["test"] / "metrics.json").write_text(json.dumps({"srcc": 0.5, "plcc": 0.5}))
            pd.DataFrame({"step": [1], "val/srcc": [0.4], "val/plcc": [0.4]}).to_csv(dirs["finetune"] / "metrics.csv", index=False)
            expected["a" if variant is a else "b"].append(pred)
        expected["t"].append(score)
    result, _ = ablate.ablation_report([a, b], [101, 102], tmp_path, [("quickstart", "image_only")], n_bootstrap=200)
    pair = result["pairs"][0]
    want = paired_bootstrap(expected["a"], expected["b"], expected["t"], n=200, resample="seeds_and_images")
    for key in ("diff", "low", "high", "p_le_0"):
        assert pair[key] == pytest.approx(want[key], abs=1e-12), key
    assert pair["per_seed"] == pytest.approx(want["per_seed"], abs=1e-12)
    assert pair["low"] > 0


def test_ablation_commands_share_stage_one_and_test_on_the_variant_inputs():
    ablate = _load_ablate()
    variant = ablate.VARIANTS["image_only"]
    pre, fine, test = ablate.commands(variant, 101, Path("outputs"), "python", test=True)
    assert "data.build.split_seed=101" in pre and "data.build.split_seed=101" in test
    assert "run_name=quickstart-pretrain-split101" in pre
    assert "init_from=outputs/train/quickstart-pretrain-split101" in fine
    assert "data.description_column=none" in fine and "data.description_column=none" in test
