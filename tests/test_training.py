"""Training: real steps on a tiny model and generated images, exact resume, failure behaviour."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import compose_config, load_script, tiny_train_overrides, train_preempted
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.trainer import NonFiniteLossError

train = load_script("train.py").train


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    return make_smoke(16, seed=2)


def compose_train(smoke: dict, out: Path, *overrides: str):
    return compose_config("train", *tiny_train_overrides(smoke, out, *overrides))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_training_state(run_dir / "last.pt")["model"]


def test_two_finetune_steps_write_checkpoints_and_history(smoke, tmp_path):
    metrics = train(compose_train(smoke, tmp_path))
    run = tmp_path / "train" / "run"
    assert {"last.pt", "best.pt", "best.safetensors", "metrics.csv", "config.yaml", "curves.png"} <= {p.name for p in run.iterdir()}
    state = load_training_state(run / "last.pt")
    assert state["step"] == 2 and "val/srcc" in metrics
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "config"}
    assert state["config"]["model"]["backbone"] == "LongCLIP-tiny"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # fp16's first scale overflows
def test_mixed_precision_training_runs_on_cpu(smoke, tmp_path, precision):
    """The tiny MTPG-AIAA trains under CPU autocast: fp32 master weights, finite losses,
    and for fp16 a loss scale that is saved for resume."""
    train(compose_train(smoke, tmp_path, f"trainer.precision={precision}"))
    run = tmp_path / "train" / "run"
    state = load_training_state(run / "last.pt")
    assert state["step"] == 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert bool(state["scaler"]) == (precision == "fp16") and state["scaler"].get("scale", 1.0) > 0
    losses = [row["train/loss"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if "train/loss" in row]  # fmt: skip
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_resume_continues_exactly(smoke, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(compose_train(smoke, straight, "trainer.max_steps=4"))

    resumed = tmp_path / "resumed"
    train_preempted(train, compose_train(smoke, resumed, "trainer.max_steps=4"), monkeypatch)
    assert load_training_state(resumed / "train" / "run" / "last.pt")["step"] == 2
    train(compose_train(smoke, resumed, "trainer.max_steps=4", "resume=auto"))

    a, b = weights(straight / "train" / "run"), weights(resumed / "train" / "run")
    assert load_training_state(resumed / "train" / "run" / "last.pt")["step"] == 4
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_frozen_backbone_is_unchanged_after_a_step(smoke, tmp_path):
    from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

    train(compose_train(smoke, tmp_path, "model.freeze=frozen", "trainer.max_steps=1"))
    trained = weights(tmp_path / "train" / "run")
    torch.manual_seed(20240716)  # train() seeds with cfg.seed before building the model
    initial = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="token", prompts="clean",
                                    extra={"fusion": {"num_heads": 4}})).state_dict()  # fmt: skip
    for key, value in trained.items():
        if key.startswith("backbone."):
            assert torch.equal(value, initial[key]), key
    assert not torch.equal(trained["fusion.mlp.0.weight"], initial["fusion.mlp.0.weight"])


def test_last_n_policy_trains_only_the_last_blocks(smoke, tmp_path):
    from mtpg_aiaa.engine.builders import build_training_model

    cfg = compose_train(smoke, tmp_path, "model.freeze=last_n", "model.freeze_last_n=1")
    model = build_training_model(cfg.model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "backbone.visual.transformer.resblocks.1.attn.in_proj_weight" in trainable
    assert "backbone.visual.transformer.resblocks.0.attn.in_proj_weight" not in trainable
    assert "backbone.transformer.resblocks.1.mlp.c_fc.weight" in trainable
    assert "backbone.token_embedding.weight" not in trainable and "fusion.mlp.0.weight" in trainable


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(smoke, tmp_path, monkeypatch):
    from mtpg_aiaa.engine.tasks.mtpg import finetune as stage2

    original = stage2.FinetuneTask.training_step
    calls = {"n": 0}

    def poisoned(self, model, batch, device):
        calls["n"] += 1
        losses = original(self, model, batch, device)
        if calls["n"] == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(stage2.FinetuneTask, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 2.*last\.pt"):
        train(compose_train(smoke, tmp_path, "trainer.max_steps=4", "trainer.save_every=1"))
    assert load_training_state(tmp_path / "train" / "run" / "last.pt")["step"] == 2


def test_failed_checkpoint_write_keeps_the_previous_one(smoke, tmp_path, monkeypatch):
    train(compose_train(smoke, tmp_path))
    last = tmp_path / "train" / "run" / "last.pt"
    before = last.read_bytes()

    def broken_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    from mtpg_aiaa.engine.checkpointing import save_training_state

    with pytest.raises(OSError, match="disk full"):
        save_training_state(last, load_training_state(last))
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")] == []


class _CountingTask:
    """A least-squares task whose second micro-batch arrives with every image skipped."""

    def __init__(self):
        self.train_dataset = torch.utils.data.TensorDataset(torch.randn(8, 3))

    def collate(self, samples):
        batch = {"x": torch.stack([s[0] for s in samples]), "index": torch.arange(len(samples))}
        return batch

    def training_step(self, model, batch, device):
        loss = model(batch["x"]).pow(2).mean()
        return {"loss": loss}

    def validate(self, model, device):
        return {}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the skipped step, on purpose
def test_a_micro_batch_of_only_skipped_images_adds_no_gradient(tmp_path):
    from mtpg_aiaa.engine.loggers import MetricsLogger
    from mtpg_aiaa.engine.trainer import Trainer, TrainerConfig

    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(model, _CountingTask(), optimizer, scheduler, TrainerConfig(batch_size=4, num_workers=0),
                      tmp_path, MetricsLogger(tmp_path), {}, torch.device("cpu"))  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    assert trainer._micro_step({"index": torch.empty(0, dtype=torch.long), "skipped": []}) == {}
    trainer._optimizer_step()  # nothing to apply: weights unchanged, the schedule advances
    assert trainer.step == 1 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    losses = trainer._micro_step({"x": torch.randn(4, 3), "index": torch.arange(4)})
    trainer._optimizer_step()
    assert "loss" in losses and not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_weight_average_is_a_bias_corrected_moving_average():
    from mtpg_aiaa.engine.ema import WeightAverage

    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # frozen parameters are not averaged
    average = WeightAverage(model, decay=0.9)
    with average.applied(model):  # nothing averaged yet: the weights as they are
        assert average.averaged() == {}
    history = []
    for delta in (1.0, 2.0, 4.0):
        with torch.no_grad():
            model.weight.add_(delta)
        history.append(model.weight.detach().clone())
        average.update(model)
    weights = torch.tensor([0.9**2, 0.9, 1.0]) * 0.1 / (1 - 0.9**3)  # exponential weights, summing to 1
    expected = sum(w * h for w, h in zip(weights, history))
    assert torch.allclose(average.averaged()["weight"], expected) and "bias" not in average.shadow
    with average.applied(model):
        assert torch.allclose(model.weight, expected)
    assert torch.equal(model.weight, history[-1])  # the raw weights come back


def test_resume_with_weight_average_continues_exactly(smoke, tmp_path, monkeypatch):
    overrides = ("trainer.max_steps=4", "trainer.ema_decay=0.9", "model.freeze=frozen")
    straight = tmp_path / "straight"
    train(compose_train(smoke, straight, *overrides))
    train_preempted(train, compose_train(smoke, tmp_path / "resumed", *overrides), monkeypatch)
    train(compose_train(smoke, tmp_path / "resumed", *overrides))
    a = load_training_state(straight / "train" / "run" / "last.pt")
    b = load_training_state(tmp_path / "resumed" / "train" / "run" / "last.pt")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    for key, value in a["ema"]["shadow"].items():
        assert torch.equal(value, b["ema"]["shadow"][key]), key
    averaged = {k: v / (1 - 0.9**4) for k, v in a["ema"]["shadow"].items()}
    assert any(not torch.allclose(v, a["model"][k]) for k, v in averaged.items()), "the average differs from the weights"
    # best.safetensors holds the averaged weights that were validated
    from mtpg_aiaa.models.mtpg.checkpoint import load_model

    best = dict(load_model(straight / "train" / "run" / "best.safetensors").named_parameters())
    best_state = load_training_state(straight / "train" / "run" / "best.pt")
    correction = 1 - 0.9 ** best_state["ema"]["updates"]
    for key, value in best_state["ema"]["shadow"].items():
        assert torch.allclose(best[key].detach(), value / correction, atol=1e-6), key
