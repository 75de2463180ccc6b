"""Toy-HAND descriptions follow the toy factors; the toy claim's probe behaves as documented, its
SimCLR baseline is a task whose step is the two-view InfoNCE, and a tiny claim trains every arm
through the Trainer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mtpg_aiaa.experiments.aesnet import toy_claim
from mtpg_aiaa.experiments.aesnet.simclr import SimCLRModel, SimCLRTask, two_views
from mtpg_aiaa.experiments.aesnet.toy_claim import ridge_probe
from mtpg_aiaa.models.aesnet.losses import symmetric_info_nce
from mtpg_aiaa.experiments.aesnet.toy_hand import TOY_ATTRIBUTES, describe_factors


def factors(**overrides):
    row = {"harmony": 0.95, "balance": 0.1, "heavy_side": "left", "sharpness": 0.05, "grain": 0.9,
           "scheme": "analogous", "subject": "portrait", "base_hue": 0.5}  # fmt: skip
    return pd.Series({**row, **overrides})


def test_descriptions_follow_the_factors_and_content_ignores_the_score():
    text = describe_factors(factors(), np.random.default_rng(0))
    assert set(text) == set(TOY_ATTRIBUTES)
    assert "excellent" in text["color"] and "very poor" in text["composition"] and "left" in text["composition"]
    assert "very poor" in text["depth_of_field"] and "very poor" in text["technical_quality"]
    better = describe_factors(factors(harmony=0.0, balance=0.99, sharpness=0.99, grain=0.0), np.random.default_rng(0))
    assert better["content"] == text["content"]  # the same painting content, whatever the quality
    assert "portrait" in text["content"] and "cool" in text["content"]


def test_ridge_probe_recovers_a_linear_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 0.1 * rng.normal(size=300)
    pred, _ = ridge_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:])
    assert np.corrcoef(pred, y[250:])[0, 1] > 0.95


class Pooled(torch.nn.Module):
    num_features = 6

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 6)

    def forward(self, images):
        return self.linear(images.mean(dim=(2, 3)))


def test_simclr_task_step_is_the_infonce_of_two_views_seeded_by_the_task():
    torch.manual_seed(0)
    images = torch.rand(5, 3, 16, 16)
    model = SimCLRModel(Pooled(), projection_dim=4)
    task = SimCLRTask([{"image": image} for image in images], lambda s: {"image": torch.stack([x["image"] for x in s])}, 7)
    loss = task.training_step(model, task.collate(list(task.train_dataset)), torch.device("cpu"))["loss"]
    first, second = two_views(images, torch.Generator().manual_seed(7))
    expected = symmetric_info_nce(model(first), model(second), torch.tensor(np.log(10.0)))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert task.validate(model, torch.device("cpu")) == {}
    assert model.backbone.linear.weight.requires_grad and model(images).norm(dim=-1).allclose(torch.ones(5))


def test_tiny_claim_trains_every_arm_through_the_trainer(tmp_path, monkeypatch):
    runs = []
    real_fit = toy_claim.fit

    def recording_fit(model, task, optimizer, config, run_dir, **kwargs):
        runs.append((run_dir.name, type(task).__name__, getattr(task, "affinity", None), config.max_steps))
        return real_fit(model, task, optimizer, config, run_dir, **kwargs)

    monkeypatch.setattr(toy_claim, "fit", recording_fit)
    results = toy_claim.run(toy_claim.parse_args(["--root", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                                                  "--images", "60", "--steps", "2", "--batch-size", "8", "--seeds", "0"]))
    assert runs == [("simclr-seed0", "SimCLRTask", None, 2), ("aesnet-seed0", "AesNetPretrainTask", None, 2),
                    ("aesnet+restrain-seed0", "AesNetPretrainTask", "restrain", 2)]  # random is not trained
    assert set(results["arms"]) == set(toy_claim.ARMS) and len(results["paired"]) == 5
    assert np.isnan(results["arms"]["random"][0]["last_loss"])
    assert all(np.isfinite(results["arms"][arm][0]["last_loss"]) for arm in ("simclr", "aesnet", "aesnet+restrain"))
    assert {"diff", "low", "high", "p_le_0", "per_seed"} <= set(results["paired"]["aesnet - simclr"])
