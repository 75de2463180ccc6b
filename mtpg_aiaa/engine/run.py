"""Train a built model with a built task, in-process, through the :class:`Trainer`.

``train.py`` composes a run from configs; experiments (toy quickstarts, toy claims) train
several small models in one process, each with its own optimizer and settings. Both end in
the same ``Trainer``: this is the part of ``train.py``'s ``_train`` that does not read a
config (the metrics logger, the schedule sized by the trainer, ``fit``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from .loggers import MetricsLogger
from .trainer import Task, Trainer, TrainerConfig

Schedule = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


def constant_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Every step at each group's own learning rate (``total_steps`` unused: the signature of a schedule)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def fit(model: nn.Module, task: Task, optimizer: torch.optim.Optimizer, config: TrainerConfig, run_dir: str | Path,
        schedule: Schedule = constant_schedule, device: torch.device | str = "cpu", validate: str = "epoch",
        run_config: dict | None = None) -> dict[str, float]:  # fmt: skip
    """Run ``task`` on ``model`` for ``config``'s steps; returns the last validation metrics.

    Args:
        schedule: ``(optimizer, total_steps) -> LRScheduler``, built once the trainer knows
            its number of steps (``engine.optim.cosine_with_warmup`` fits, with a ``partial``).
        validate: ``"epoch"`` (``config.val_every`` as set) or ``"end"`` (once, after the last
            step: short runs whose validation would cost more than their training).
        run_config: what ``last.pt`` records as the run's config.
    """
    if validate not in ("epoch", "end"):
        raise ValueError(f"validate must be 'epoch' or 'end', got {validate!r}")
    run_dir = Path(run_dir)
    logger = MetricsLogger(run_dir)
    trainer = Trainer(model, task, optimizer, None, config, run_dir, logger, run_config or {}, torch.device(device))
    if validate == "end":
        trainer.cfg = replace(config, val_every=trainer.total_steps)
    trainer.scheduler = schedule(optimizer, trainer.total_steps)
    try:
        return trainer.fit()
    finally:
        logger.close()
