"""``engine.run.fit``: a built model and task through the Trainer, in-process (the experiments'
way to train), validating once at the end or every epoch, at a constant rate by default."""
from __future__ import annotations

from functools import partial

import pandas as pd
import pytest
import torch
from torch import nn

from mtpg_aiaa.engine.optim import cosine_with_warmup
from mtpg_aiaa.engine.run import fit
from mtpg_aiaa.engine.trainer import TrainerConfig


class LineTask:
    """Fit ``y = 2x`` with MSE; counts its validations."""

    def __init__(self, rows: int = 16):
        x = torch.linspace(-1, 1, rows)[:, None]
        self.train_dataset = [{"x": x[i], "y": 2 * x[i]} for i in range(rows)]
        self.validations = 0

    def collate(self, samples):
        return {key: torch.stack([s[key] for s in samples]) for key in ("x", "y")}

    def training_step(self, model, batch, device):
        return {"loss": nn.functional.mse_loss(model(batch["x"].to(device)), batch["y"].to(device))}

    @torch.no_grad()
    def validate(self, model, device):
        self.validations += 1
        return {"val/neg_loss": -float(self.training_step(model, self.collate(self.train_dataset), device)["loss"])}


def settings(**overrides) -> TrainerConfig:
    return TrainerConfig(**{"epochs": 3, "batch_size": 4, "num_workers": 0, "progress": False, "seed": 0,
                            "monitor": "val/neg_loss", "precision": "fp32", "clip_grad_norm": None, **overrides})  # fmt: skip


@pytest.mark.parametrize(("validate", "expected"), [("end", 1), ("epoch", 3)])
def test_fit_trains_through_the_trainer_and_validates_as_told(tmp_path, validate, expected):
    torch.manual_seed(0)
    model, task = nn.Linear(1, 1), LineTask()
    before = -task.validate(model, torch.device("cpu"))["val/neg_loss"]
    task.validations = 0
    config = settings()
    metrics = fit(model, task, torch.optim.SGD(model.parameters(), lr=0.1), config, tmp_path, validate=validate)
    assert task.validations == expected and metrics["step"] == 12  # 3 epochs of 16 rows in batches of 4
    assert -metrics["val/neg_loss"] < before / 4  # it learned
    assert config.val_every == 0  # the caller's settings are not changed
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows["train/lr"].dropna().eq(0.1).all()  # the constant schedule
    assert (tmp_path / "last.pt").is_file()


def test_fit_takes_a_schedule_sized_by_the_trainer(tmp_path):
    model, task = nn.Linear(1, 1), LineTask()
    fit(model, task, torch.optim.SGD(model.parameters(), lr=0.1), settings(log_every=1), tmp_path,
        schedule=partial(cosine_with_warmup, warmup_steps=0), validate="end")  # fmt: skip
    rates = pd.read_csv(tmp_path / "metrics.csv")["train/lr"].dropna().to_numpy()
    assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.01 and len(rates) == 12  # decayed over the 12 steps
    with pytest.raises(ValueError, match="validate"):
        fit(model, task, torch.optim.SGD(model.parameters(), lr=0.1), settings(), tmp_path, validate="never")
