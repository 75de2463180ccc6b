"""One training loop for both stages.

A *task* (``tasks.mtpg.pretrain.PretrainTask`` / ``tasks.mtpg.finetune.FinetuneTask``) supplies the dataset, the
loss of a batch and the validation; the :class:`Trainer` owns everything else:
accumulation, clipping, mixed precision, the schedule, validation cadence, checkpoints
(``last.pt``, ``best.pt`` by ``val/srcc``), exact resume, logging, NaN and signal handling,
and, with ``world_size > 1``, DistributedDataParallel (docs/distributed.md).
"""
from __future__ import annotations

import difflib
import logging
import math
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..backbone.compiling import compile_blocks
from ..errors import SettingError
from ..fileio import remove_stale_temporaries
from ..models.checkpoints import model_record
from .checkpointing import save_training_state, unwrap
from .distributed import any_rank
from .ema import WeightAverage
from .loggers import MetricsLogger
from .output_errors import explain_write_failure
from .sampling import ResumableSampler
from .typed_settings import check_types_and_bounds

log = logging.getLogger(__name__)
# Cluster schedulers announce pre-emption and time limits with these; all stop gracefully.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops and the last good checkpoint stays."""


class TrainingInterrupted(RuntimeError):
    """A stop signal ended the run early; ``last.pt`` holds step ``step``.

    ``exit_code`` is the shell's convention for death by a signal (128 + its number:
    143 for SIGTERM, 130 for SIGINT), so schedulers and scripts see a run that did not finish.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.signal_name = signal.Signals(signum).name if signum else "a stop on another rank"
        self.exit_code = 128 + signum if signum else 1
        super().__init__(f"interrupted at step {step} ({self.signal_name}); wrote {checkpoint}")


class Task(Protocol):
    train_dataset: Dataset

    def collate(self, samples: list) -> dict: ...
    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]: ...
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...


@dataclass
class TrainerConfig:
    epochs: int = 5
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 16
    accumulate: int = 1
    clip_grad_norm: float | None = 1.0
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 elsewhere) | fp32 | bf16 | fp16; fp32 master weights
    num_workers: int = 4
    seed: int = 20240716
    val_every: int = 0  # optimizer steps between validations; 0 = end of each epoch
    save_every: int = 0  # optimizer steps between last.pt writes; 0 = with validation
    log_every: int = 10
    monitor: str = "val/srcc"
    progress: bool = True
    find_unused_parameters: bool = False  # DDP: set when some trainable parameter gets no gradient in a step
    ema_decay: float = 0.0  # > 0: validate and keep the best of an average of the weights (ema.py)
    compile: bool = False  # torch.compile each backbone transformer block in place (backbone/compiling.py)

    def __post_init__(self) -> None:
        # batch_size=0 or =abc: one line naming the key, before a model is built (issue 21 item 14)
        check_types_and_bounds(
            self, "trainer",
            minimums={"epochs": 1, "max_steps": 1, "batch_size": 1, "accumulate": 1, "clip_grad_norm": 0.0,
                      "num_workers": 0, "val_every": 0, "save_every": 0, "log_every": 1, "ema_decay": 0.0},
            below={"ema_decay": 1.0}, choices={"precision": ("auto", "fp32", "bf16", "fp16")},
        )  # fmt: skip

    @classmethod
    def from_config(cls, values, ignored: tuple[str, ...] = (), **overrides) -> "TrainerConfig":
        """A config from the ``trainer`` group; an unknown key is an error (a typo such as
        ``+trainer.batchsize=4`` would otherwise train with the default, silently).

        Args:
            values: the group's mapping.
            ignored: keys of the group read elsewhere (e.g. ``eval_batch_size`` by the tasks).
            overrides: values set from outside the group (``seed``).
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known - set(ignored))
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known | set(ignored)), n=1)
                hints.append(f"trainer.{key}" + (f" (did you mean trainer.{close[0]}?)" if close else ""))
            raise UnknownSettingError(f"unknown setting(s) {', '.join(hints)}; the trainer reads "
                                      f"{', '.join(sorted(known | set(ignored)))}")  # fmt: skip
        return cls(**({k: v for k, v in values.items() if k in known} | overrides))


class UnknownSettingError(SettingError):
    """A config key that nothing reads (a typo, usually)."""


class TaskStep(nn.Module):
    """The task's training step as a module's ``forward``, so DistributedDataParallel can
    wrap a step that calls several model methods (stage 1 encodes views and descriptions
    separately) and still synchronise the gradients of every parameter it used."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        return self.task.training_step(self.model, batch, device)


class Trainer:
    """Runs ``task`` on ``model`` with ``optimizer``/``scheduler``, writing into ``run_dir``."""

    def __init__(self, model: nn.Module, task: Task, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainerConfig, run_dir: str | Path,
                 logger: MetricsLogger, run_config: dict, device: torch.device, rank: int = 0, world_size: int = 1):  # fmt: skip
        self.model, self.task, self.optimizer, self.scheduler = model, task, optimizer, scheduler
        self.cfg, self.run_dir, self.logger, self.run_config = config, Path(run_dir), logger, run_config
        self.device, self.rank, self.world_size = device, rank, world_size
        self.autocast_dtype = resolve_autocast(config.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.autocast_dtype == torch.float16)
        self.sampler = ResumableSampler(task.train_dataset, seed=config.seed, rank=rank, world_size=world_size)
        if config.compile:
            compile_blocks(unwrap(model))  # in place: the same parameters, optimizer and state-dict keys
        self.average = WeightAverage(unwrap(model), config.ema_decay) if config.ema_decay else None
        self.step_module: nn.Module = TaskStep(model, task)
        if world_size > 1 or dist.is_initialized():  # a one-process torchrun group too
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters,
            )  # fmt: skip
            log.info("DistributedDataParallel over %d process(es) (%s)", world_size, dist.get_backend())
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_metric = -math.inf
        self._stop_signal: int | None = None
        self._skipped_last_micro_batch = False
        self._micro_batches_with_gradient = 0  # in the current optimizer step
        self.step_lr = float("nan")  # the (first group's) learning rate the last optimizer step used
        # data.on_bad_image=skip: micro-batches with no readable image, and unreadable images in all.
        self.skipped_micro_batches = self.skipped_images = 0
        # Losses since the last finiteness check, kept on the device: (step, epoch, micro-batch, loss).
        # Reading a loss on the host each step would make the host wait for the GPU every step.
        self._unchecked_losses: list[tuple[int, int, int, torch.Tensor]] = []

    # -- sizes -------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        micro_batches = self.sampler.per_rank // self.cfg.batch_size
        steps = micro_batches // self.cfg.accumulate
        if steps == 0:
            raise SettingError(
                f"an epoch of {self.sampler.per_rank} samples per rank gives no optimizer step at batch "
                f"{self.cfg.batch_size} x accumulate {self.cfg.accumulate}"
            )
        return steps

    @property
    def total_steps(self) -> int:
        return self.cfg.max_steps or self.cfg.epochs * self.steps_per_epoch

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_metric": self.best_metric, "rng": torch.get_rng_state(), "config": self.run_config,
            "skipped": {"micro_batches": self.skipped_micro_batches, "images": self.skipped_images},
            # what the model was trained on (data/provenance.py): test.py checks it against its table
            "training_data": getattr(unwrap(self.model), "training_data", None),
            **model_record(unwrap(self.model)),  # system, model kind, model config: load_model rebuilds from these
            **({"ema": self.average.state_dict()} if self.average else {}),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_metric = state.get("best_metric", -math.inf)
        skipped = state.get("skipped", {})
        self.skipped_micro_batches, self.skipped_images = skipped.get("micro_batches", 0), skipped.get("images", 0)
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        if self.average is not None:
            if "ema" not in state:
                raise KeyError("trainer.ema_decay is set but the checkpoint has no weight average; resume=never, "
                               "or resume with trainer.ema_decay=0")  # fmt: skip
            self.average.load_state_dict(state["ema"])

    @property
    def distributed(self) -> bool:
        return isinstance(self.step_module, DistributedDataParallel)

    def save(self, name: str) -> Path | None:
        if self.rank != 0:
            return None
        with explain_write_failure(self.run_dir / name):
            return save_training_state(self.run_dir / name, self.state_dict())

    # -- loop --------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until ``total_steps``; returns the last validation metrics."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            for name in ("last.pt", "best.pt", "best.safetensors"):
                for stale in remove_stale_temporaries(self.run_dir / name):
                    log.info("removed %s, left by a run killed while writing %s", stale.name, name)
        previous_handlers = self._install_signal_handlers()
        metrics: dict[str, float] = {}
        try:
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                       disable=not self.cfg.progress or self.rank != 0, dynamic_ncols=True)  # fmt: skip
            with bar:
                while self.step < self.total_steps and self._stop_signal is None:
                    metrics = self._run_epoch(bar) or metrics
            self._check_losses()
            if self._stop_signal is not None:
                self.save("last.pt")
                if self.rank == 0:
                    log.warning("signal %d: wrote %s and stopped at step %d", self._stop_signal,
                                self.run_dir / "last.pt", self.step)  # fmt: skip
                _chain_previous_handler(self._stop_signal, previous_handlers)
                raise TrainingInterrupted(self._stop_signal, self.step, self.run_dir / "last.pt")
            if not metrics or metrics.get("step") != self.step:
                metrics = self._validate_and_save()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return metrics

    def _run_epoch(self, bar: tqdm) -> dict[str, float]:
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * cfg.batch_size)
        set_epoch = getattr(self.task.train_dataset, "set_epoch", None)
        if set_epoch:
            set_epoch(self.epoch)
        on_device = getattr(self.task.train_dataset, "on_device", False)  # batches gathered on the device already
        workers = getattr(self.task, "train_loader_workers", None)  # a task's own choice (cached features)
        workers = 0 if on_device else cfg.num_workers if workers is None else workers
        loader = DataLoader(self.task.train_dataset, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=workers, collate_fn=self.task.collate,
                            pin_memory=self.device.type == "cuda" and not on_device, persistent_workers=False)  # fmt: skip
        micro_batches_per_epoch = self.steps_per_epoch * cfg.accumulate
        metrics: dict[str, float] = {}
        self.model.train()
        start, steps_this_epoch = time.perf_counter(), 0
        for batch in loader:
            if self.batch_in_epoch >= micro_batches_per_epoch:
                break
            losses = self._micro_step(batch)
            self.batch_in_epoch += 1
            if self.batch_in_epoch % cfg.accumulate:
                continue
            self._optimizer_step()
            if self.distributed and any_rank(self._stop_signal is not None, self.device) and self._stop_signal is None:
                self._stop_signal = 0  # another rank was signalled: every rank stops at the same step
            bar.update(1)
            steps_this_epoch += 1
            log_now = self.step % cfg.log_every == 0 or self.step == 1
            end_of_epoch = self.batch_in_epoch >= micro_batches_per_epoch
            validate = (cfg.val_every and self.step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch) \
                or self.step >= self.total_steps
            if log_now or validate or (cfg.save_every and self.step % cfg.save_every == 0):
                self._check_losses()  # the only points where the host waits for the losses
            if log_now:
                losses = {k: float(v) for k, v in losses.items()}
                if losses:
                    bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{self.step_lr:.2e}")
                images_per_s = steps_this_epoch * cfg.batch_size * cfg.accumulate * self.world_size / max(time.perf_counter() - start, 1e-9)
                skipped = ({"train/skipped_micro_batches": self.skipped_micro_batches,
                            "train/skipped_images": self.skipped_images} if self.skipped_images else {})  # fmt: skip
                self._log({f"train/{k}": v for k, v in losses.items()} | skipped
                          | {"train/lr": self.step_lr, "train/images_per_s": images_per_s})  # fmt: skip
            if end_of_epoch:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            if validate:
                metrics = self._validate_and_save()
            elif cfg.save_every and self.step % cfg.save_every == 0:
                self.save("last.pt")
            if self.step >= self.total_steps or self._stop_signal is not None or end_of_epoch:
                break
        return metrics

    def _micro_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch; its losses, detached, on the device."""
        empty = "index" in batch and len(batch["index"]) == 0
        if self.distributed:
            empty = any_rank(empty, self.device)  # ranks must run the same collectives
        if empty:
            # data.on_bad_image=skip dropped every image of this micro-batch (on some rank).
            # It still counts, so the data order (and resume) stay as planned; it adds no gradient.
            log.warning("step %d: every image of micro-batch %d was unreadable and skipped; it adds no gradient",
                        self.step, self.batch_in_epoch)  # fmt: skip
            self._skipped_last_micro_batch = True
            self.skipped_micro_batches += 1
            self.skipped_images += len(batch.get("skipped", []))
            return {}
        self._skipped_last_micro_batch = False
        self.skipped_images += len(batch.get("skipped", []))
        # Gradients are all-reduced once per optimizer step: earlier micro-batches run under no_sync.
        last_of_step = (self.batch_in_epoch + 1) % self.cfg.accumulate == 0
        sync = nullcontext() if last_of_step or not self.distributed else self.step_module.no_sync()
        with sync:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                losses = self.step_module(batch, self.device)
            loss = losses["loss"]
            self._unchecked_losses.append((self.step, self.epoch, self.batch_in_epoch, loss.detach()))
            self.scaler.scale(loss / self.cfg.accumulate).backward()
        self._micro_batches_with_gradient += 1
        return {k: v.detach() for k, v in losses.items()}

    def _check_losses(self) -> None:
        """Raise ``NonFiniteLossError`` if a loss since the last check was not finite.

        Called at log, validation and checkpoint steps (and when training stops), never
        per step, so the host does not wait for the GPU each step; a checkpoint is only
        written after the losses of the steps before it were found finite, so ``last.pt``
        stays the last good state. Every rank calls it at the same steps (a collective).
        """
        pending, self._unchecked_losses = self._unchecked_losses, []
        finite = torch.stack([loss.float() for *_, loss in pending]).isfinite() if pending else None
        bad = None if finite is None else (~finite).nonzero()
        first = int(bad[0, 0]) if bad is not None and len(bad) else None  # the one host sync
        failed = first is not None
        if self.distributed:
            failed = any_rank(failed, self.device)
        if not failed:
            return
        last = self.run_dir / "last.pt"
        where = "on another rank" if first is None else (
            "loss is {} at step {} (epoch {}, micro-batch {})".format(pending[first][3].item(), *pending[first][:3]))
        raise NonFiniteLossError(
            f"{where}{' on some rank' if self.distributed and first is not None else ''}; stopping. "
            f"The last good checkpoint is {last if last.exists() else 'not written yet'}. "
            "Lower the learning rate, enable gradient clipping or use bf16/fp32."
        )

    def _optimizer_step(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        # No gradient at all when every micro-batch of the step was skipped: the schedule
        # still advances, the weights (and the fp16 scaler, which would fail) do not.
        if any(p.grad is not None for p in params):
            ran = self._micro_batches_with_gradient
            if ran < self.cfg.accumulate:
                # Skipped micro-batches: the step's gradient is the mean over those that ran
                # (each was scaled by 1/accumulate), as one batch of the readable images.
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(self.cfg.accumulate / ran)
            if self.distributed and self._skipped_last_micro_batch:
                _average_gradients(params, self.world_size)  # the skipped micro-batch never ran DDP's all-reduce
            if self.cfg.clip_grad_norm:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._micro_batches_with_gradient = 0
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # before the schedule moves on to the next step's
        with warnings.catch_warnings():
            # A skipped step advances the schedule without an optimizer step, on purpose.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.scheduler.step()
        self.step += 1
        if self.average is not None:
            self.average.update(unwrap(self.model))

    def _validate_and_save(self) -> dict[str, float]:
        base = unwrap(self.model)
        with self.average.applied(base) if self.average else nullcontext():
            metrics = self.task.validate(self.model, self.device) if self.rank == 0 else {}
            metrics = {**metrics, "step": self.step, "epoch": self.epoch}
            self._log(metrics)
            value = metrics.get(self.cfg.monitor)
            if value is not None and not math.isnan(value) and value > self.best_metric:
                self.best_metric = value
                if self.rank == 0 and hasattr(base, "save"):  # a Scorer saves itself (models/base.py)
                    with explain_write_failure(self.run_dir / "best.safetensors"):
                        base.save(self.run_dir / "best.safetensors")  # the validated (averaged) weights
                improved = True
            else:
                improved = False
        self.model.train()
        if improved:
            self.save("best.pt")  # raw weights + average: a training state to resume from
        self.save("last.pt")
        return metrics

    def _log(self, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            self.logger.log(metrics, step=self.step)

    def _install_signal_handlers(self) -> dict:
        """SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (cluster pre-emption and time limits) finish
        the current step, write last.pt and stop; see ``_chain_previous_handler``."""
        previous = {}

        def request_stop(signum, _frame):
            self._stop_signal = signum

        for signum in STOP_SIGNALS:
            try:
                previous[signum] = signal.signal(signum, request_stop)
            except ValueError:  # not the main thread: leave handlers alone
                pass
        return previous


def resolve_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: full fp32).

    ``auto`` is bf16 (else fp16) on CUDA and fp32 elsewhere; an explicit ``bf16`` or
    ``fp16`` autocasts on any device (CPU autocast supports both), rather than being
    silently dropped."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise SettingError(f"trainer.precision must be auto, fp32, bf16 or fp16; got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _chain_previous_handler(signum: int, previous: dict) -> None:
    """After last.pt is written, hand the signal to whoever listened before us: under
    submitit that handler requeues the job (and exits), so pre-emption resumes from it."""
    handler = previous.get(signum)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, None)


def _average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size
