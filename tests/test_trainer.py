"""The trainer's mechanics on a least-squares task: gradient accumulation (also under DDP
and with skipped micro-batches), mixed precision on CPU, the schedule past step 1 and
best-checkpoint selection. Plain SGD, so a gradient of the wrong size changes the weights."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch import nn

from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.loggers import MetricsLogger
from mtpg_aiaa.engine.optim import cosine_with_warmup
from mtpg_aiaa.engine.trainer import Trainer, TrainerConfig, resolve_autocast

CPU = torch.device("cpu")
NUM_SAMPLES, DIM, LR = 16, 3, 0.1


class LeastSquaresTask:
    """Samples are indices into fixed inputs ``x [N, DIM]`` and targets ``y [N]``; the loss is
    the batch mean of squared errors, so a batch's gradient is the mean of its samples'.

    ``skip``: collate calls (0-based) whose every image is 'unreadable' (an empty batch, as
    ``data.on_bad_image=skip`` gives). ``metrics``: the ``val/srcc`` of successive validations.
    """

    def __init__(self, skip: tuple[int, ...] = (), metrics: tuple[float, ...] = (), loss_scale: float = 1.0):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(NUM_SAMPLES, DIM, generator=g), torch.randn(NUM_SAMPLES, generator=g)
        self.train_dataset = list(range(NUM_SAMPLES))
        self.skip, self.metrics, self.loss_scale = set(skip), list(metrics), loss_scale
        self.batches: list[list[int]] = []  # the indices of every collate call, skipped ones included
        self.compute_dtypes: list[torch.dtype] = []
        self.validated: list[dict[str, torch.Tensor]] = []  # the weights each validation saw

    def collate(self, samples: list[int]) -> dict:
        self.batches.append(list(samples))
        if len(self.batches) - 1 in self.skip:
            return {"index": torch.empty(0, dtype=torch.long), "skipped": [{"index": i} for i in samples]}
        return {"index": torch.tensor(samples)}

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        prediction = model(self.x[batch["index"]]).squeeze(-1)
        self.compute_dtypes.append(prediction.dtype)
        return {"loss": self.loss_scale * (prediction.float() - self.y[batch["index"]]).pow(2).mean()}

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        self.validated.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"val/srcc": self.metrics.pop(0)} if self.metrics else {}


def make_trainer(run_dir: Path, task: LeastSquaresTask, batch_size: int, accumulate: int = 1, max_steps: int = 2,
                 rank: int = 0, world_size: int = 1, schedule=lambda step: 1.0, **config) -> Trainer:  # fmt: skip
    torch.manual_seed(0)
    model = nn.Linear(DIM, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    settings = {"clip_grad_norm": None, "precision": "fp32", "num_workers": 0, "seed": 0, "progress": False,
                "log_every": 1, **config}  # fmt: skip
    trainer_config = TrainerConfig(batch_size=batch_size, accumulate=accumulate, max_steps=max_steps, **settings)
    return Trainer(model, task, optimizer, scheduler, trainer_config, run_dir, MetricsLogger(run_dir), {}, CPU,
                   rank, world_size)  # fmt: skip


def sgd_by_hand(initial: dict[str, torch.Tensor], task: LeastSquaresTask, steps: list[list[int]]) -> dict:
    """Plain SGD, one step per list of sample indices (the batch mean of squared errors)."""
    model = nn.Linear(DIM, 1)
    model.load_state_dict(initial)
    for indices in steps:
        model.zero_grad()
        (model(task.x[indices]).squeeze(-1) - task.y[indices]).pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad
    return model.state_dict()


def initial_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(DIM, 1).state_dict()


def assert_same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


# -- gradient accumulation ---------------------------------------------------------------
def test_accumulated_micro_batches_equal_one_larger_batch(tmp_path):
    small = LeastSquaresTask()
    make_trainer(tmp_path / "a", small, batch_size=2, accumulate=4).fit()
    large = LeastSquaresTask()
    make_trainer(tmp_path / "b", large, batch_size=8).fit()
    # The same samples, in the same order, make up each optimizer step.
    assert [sum(small.batches[i : i + 4], []) for i in (0, 4)] == large.batches
    a = load_training_state(tmp_path / "a" / "last.pt")["model"]
    b = load_training_state(tmp_path / "b" / "last.pt")["model"]
    assert_same_weights(a, b)
    assert_same_weights(a, sgd_by_hand(initial_weights(), large, large.batches))
    assert not torch.equal(a["weight"], initial_weights()["weight"])


@pytest.mark.parametrize("skipped", [0, 1], ids=["first", "last"])
def test_a_skipped_micro_batch_leaves_the_mean_over_the_readable_ones(tmp_path, skipped):
    task = LeastSquaresTask(skip=(skipped,))
    make_trainer(tmp_path, task, batch_size=2, accumulate=2, max_steps=1).fit()
    readable = task.batches[1 - skipped]
    # One step on the two readable images as a batch: not half of their gradient.
    assert_same_weights(load_training_state(tmp_path / "last.pt")["model"], sgd_by_hand(initial_weights(), task, [readable]))


def _ddp_worker(rank: int, init_file: str, out_dir: str, cases: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for name, skip in cases.items():
            task = LeastSquaresTask(skip=skip)
            trainer = make_trainer(Path(out_dir) / name / f"rank{rank}", task, batch_size=2, accumulate=2,
                                   rank=rank, world_size=2)  # fmt: skip
            trainer.fit()
            torch.save(trainer.model.state_dict(), Path(out_dir) / name / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_torchrun_process_alone_joins_a_group_and_trains_through_ddp(tmp_path, monkeypatch, caplog):
    """``torchrun --nproc_per_node=1``: the process joins a one-process group (gloo here,
    NCCL on a GPU: tests/test_cuda.py) and trains through DistributedDataParallel, with the
    weights of plain training; without torchrun's variables it joins none."""
    import socket

    from torch.nn.parallel import DistributedDataParallel

    from mtpg_aiaa.engine import distributed

    assert distributed.init_distributed(CPU)[0] == distributed.DistributedContext() and not dist.is_initialized()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    caplog.set_level("INFO")
    context, _ = distributed.init_distributed(CPU, timeout_minutes=1)
    try:
        assert dist.is_initialized() and dist.get_backend() == "gloo" and context.world_size == 1
        task = LeastSquaresTask()
        trainer = make_trainer(tmp_path, task, batch_size=4)
        assert isinstance(trainer.step_module, DistributedDataParallel)
        trainer.fit()
    finally:
        distributed.shutdown()
    assert "DistributedDataParallel over 1 process(es) (gloo)" in caplog.text
    assert_same_weights(trainer.model.state_dict(), sgd_by_hand(initial_weights(), task, task.batches))


@pytest.mark.slow
def test_ddp_with_no_sync_accumulation_equals_one_process_with_the_global_batch(tmp_path):
    """2 processes x batch 2 x accumulate 2 (earlier micro-batches under ``no_sync``) equal
    one process x batch 4 x accumulate 2, also when a micro-batch of every rank is skipped
    (the last one never runs DDP's all-reduce: the trainer averages by hand)."""
    cases = {"all": (), "skip_first": (0,), "skip_last": (1,)}
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path), cases), nprocs=2,
                       start_method="spawn")  # fmt: skip
    for name, skip in cases.items():
        task = LeastSquaresTask(skip=skip)
        make_trainer(tmp_path / name / "one", task, batch_size=4, accumulate=2).fit()
        one = load_training_state(tmp_path / name / "one" / "last.pt")["model"]
        for rank in (0, 1):
            assert_same_weights(torch.load(tmp_path / name / f"rank{rank}.pt", weights_only=True), one)
        readable = [batch for i, batch in enumerate(task.batches) if i not in skip]
        steps = [readable[0] + readable[1], readable[2] + readable[3]] if not skip else [readable[0], readable[1] + readable[2]]
        assert_same_weights(one, sgd_by_hand(initial_weights(), task, steps), atol=1e-6)


# -- mixed precision on CPU ----------------------------------------------------------------
def test_autocast_dtype_follows_the_precision_setting():
    assert resolve_autocast("auto", CPU) is None and resolve_autocast("fp32", CPU) is None
    assert resolve_autocast("bf16", CPU) == torch.bfloat16 and resolve_autocast("fp16", CPU) == torch.float16
    assert resolve_autocast("fp32", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="precision must be"):
        resolve_autocast("fp61", CPU)


def test_bf16_autocast_on_cpu_keeps_fp32_master_weights(tmp_path):
    reference = LeastSquaresTask()
    make_trainer(tmp_path / "fp32", reference, batch_size=4).fit()
    task = LeastSquaresTask()
    trainer = make_trainer(tmp_path / "bf16", task, batch_size=4, precision="bf16")
    trainer.fit()
    assert set(task.compute_dtypes) == {torch.bfloat16} and set(reference.compute_dtypes) == {torch.float32}
    assert not trainer.scaler.is_enabled()  # bf16 needs no loss scaling
    weights = load_training_state(tmp_path / "bf16" / "last.pt")["model"]
    assert all(w.dtype == torch.float32 for w in weights.values())
    expected = load_training_state(tmp_path / "fp32" / "last.pt")["model"]
    assert_same_weights(weights, expected, atol=2e-2)  # the same steps, at bf16's precision
    assert any(not torch.equal(weights[k], expected[k]) for k in weights), "bf16 should round differently"


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # the skipped step, on purpose
def test_fp16_grad_scaler_skips_an_overflowing_step_and_halves_its_scale(tmp_path):
    task = LeastSquaresTask(loss_scale=1e-3)  # small gradients: no fp16 overflow of their own
    trainer = make_trainer(tmp_path, task, batch_size=4, precision="fp16", clip_grad_norm=1.0)
    assert trainer.scaler.is_enabled()
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    after_first_step = []
    first_backward = [True]

    def overflow_once(grad):
        if first_backward[0]:
            first_backward[0] = False
            return torch.full_like(grad, math.inf)
        return grad

    trainer.model.weight.register_hook(overflow_once)
    original_step = trainer._optimizer_step

    def recording_step():
        original_step()
        after_first_step.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer._optimizer_step = recording_step
    trainer.fit()
    assert set(task.compute_dtypes) == {torch.float16}
    assert_same_weights(after_first_step[0], initial, atol=0)  # the inf step was skipped, weights untouched
    assert not torch.equal(after_first_step[1]["weight"], initial["weight"])  # the next step applies
    assert all(torch.isfinite(v).all() for v in after_first_step[1].values())
    state = load_training_state(tmp_path / "last.pt")
    assert state["step"] == 2 and state["scaler"]["scale"] == 2.0**16 / 2  # halved once, saved for resume


# -- the schedule ----------------------------------------------------------------------------
def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, total_steps=12, warmup_steps=4, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up, full lr at its end
    assert lrs[4] == pytest.approx(1.0)  # cosine starts at the top
    assert lrs[8] == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert lrs[12:] == pytest.approx([0.1] * 4)  # the floor, also past the planned end
    assert all(a > b for a, b in zip(lrs[4:12], lrs[5:13]))


def test_the_schedule_advances_once_per_optimizer_step_and_logs_the_lr_it_used(tmp_path):
    factors = [0.5, 1.0, 0.8, 0.3]
    task = LeastSquaresTask()
    trainer = make_trainer(tmp_path, task, batch_size=2, accumulate=2, max_steps=4,
                           schedule=lambda step: factors[min(step, 3)])  # fmt: skip
    used = []
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"]))
    trainer.fit()
    assert used == pytest.approx([LR * f for f in factors])  # not per micro-batch
    logged = {row["step"]: row["train/lr"] for row in trainer.logger.history if "train/lr" in row}
    assert [logged[step] for step in (1, 2, 3, 4)] == pytest.approx(used)


# -- best checkpoint -------------------------------------------------------------------------
def test_best_checkpoint_keeps_the_weights_of_the_best_validation(tmp_path):
    task = LeastSquaresTask(metrics=(0.2, 0.6, 0.4, math.nan))
    trainer = make_trainer(tmp_path, task, batch_size=2, max_steps=4, val_every=1)
    trainer.fit()
    best, last = load_training_state(tmp_path / "best.pt"), load_training_state(tmp_path / "last.pt")
    assert (best["step"], best["best_metric"]) == (2, 0.6)  # 0.4 is worse, NaN is never best
    assert (last["step"], last["best_metric"]) == (4, 0.6)
    assert_same_weights(best["model"], task.validated[1], atol=0)
    assert not torch.equal(best["model"]["weight"], last["model"]["weight"])
