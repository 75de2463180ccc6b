"""Train any system's task: ``python train.py task=<system>/<task>`` (configs/task/<system>/);
MTPG-AIAA's two stages are ``python train.py stage=pretrain`` and ``stage=finetune``
(see configs/train.yaml).

A run is ``model = build_training_model(cfg.model, cfg.init_from)`` (``instantiate(cfg.model)``
plus the starting weights and freezing, engine/builders.py), ``task = instantiate(cfg.task,
model=model)``, then the ``Trainer``.

Several GPUs: ``torchrun --standalone --nproc_per_node=N train.py ...``; SLURM:
``python train.py -m hydra/launcher=slurm ...`` or ``scripts/slurm/train.sbatch``
(docs/distributed.md). ``train(cfg)`` is a plain function (tests call it); ``main`` is
the Hydra wrapper.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtpg_aiaa.engine.cli_errors import one_line_errors, run_main
from mtpg_aiaa.data.toy import ensure_dataset
from mtpg_aiaa.data.provenance import merge_records, training_entry
from mtpg_aiaa.engine.builders import build_training_model, instantiate_reraising_input_errors, read_init_record
from mtpg_aiaa.engine import distributed
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.loggers import MetricsLogger
from mtpg_aiaa.engine.run_lock import RunDirectoryLocked, RunLock
from mtpg_aiaa.engine.run_names import register_resolvers
from mtpg_aiaa.engine.seeding import seed_everything
from mtpg_aiaa.engine.trainer import Trainer, TrainerConfig
from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.device import resolve_device
from mtpg_aiaa.eval.plots import save_training_curves

log = logging.getLogger("train")
register_resolvers()


def build_task(cfg: DictConfig, model, context: distributed.DistributedContext | None = None):
    """``instantiate(cfg.task, model=model)``: the task file's ``_target_`` with its keys (what it
    reads of other groups is interpolated there); ``data=toy`` builds its images first if
    needed (rank 0)."""
    if "_target_" not in cfg.get("task", {}):
        raise SettingError("task has no _target_: pick a task file (task=<system>/<task>, configs/task/)")
    if cfg.get("data") is not None and (context is None or context.is_main):
        ensure_dataset(cfg.data)
    distributed.barrier()
    return instantiate_reraising_input_errors(cfg.task, model=model)


def run_label(cfg: DictConfig) -> str:
    """What the run trains, for its plots: MTPG-AIAA's stage name, else the task's ``_target_``."""
    if cfg.get("stage") is not None:
        return cfg.stage.name
    return str(cfg.task.get("_target_", "task")).rsplit(".", 1)[-1]


def resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.resume == "never":
        return None
    if cfg.resume == "auto":
        last = run_dir / "last.pt"
        return last if last.is_file() else None
    return Path(cfg.resume)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says; returns the final validation metrics (rank 0's under DDP)."""
    context, device = distributed.init_distributed(resolve_device(cfg.device))
    try:
        return _train(cfg, context, device)
    finally:
        distributed.shutdown()


def _train(cfg: DictConfig, context: distributed.DistributedContext, device: torch.device) -> dict[str, float]:
    run_dir = Path(cfg.paths.run_dir)
    agreed = distributed.broadcast_object(str(run_dir))
    if agreed != str(run_dir):
        raise RuntimeError(
            f"rank {context.rank} resolved the run directory {run_dir}, rank 0 {agreed}: a per-process value "
            "(such as ${now:...}) is in run_name. Set run_name=NAME explicitly for multi-process runs."
        )
    if not context.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one copy of the progress messages
    # Rank 0 locks the run directory (engine/run_lock.py); every rank learns whether it could.
    lock = RunLock(run_dir) if context.is_main else None
    refused = None
    if lock is not None:
        try:
            lock.acquire()
        except RunDirectoryLocked as error:
            refused = str(error)
    refused = distributed.broadcast_object(refused)
    if refused:
        raise RunDirectoryLocked(refused)
    try:
        return _train_in(cfg, context, device, run_dir)
    finally:
        if lock is not None:
            lock.release()


def _train_in(cfg: DictConfig, context: distributed.DistributedContext, device: torch.device,
              run_dir: Path) -> dict[str, float]:  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    trainer_cfg = TrainerConfig.from_config(cfg.trainer, ignored=("eval_batch_size",), seed=cfg.seed)  # typos fail first
    seed_everything(cfg.seed)
    model = build_training_model(cfg.model, cfg.get("init_from")).to(device)
    task = build_task(cfg, model, context)
    # What it is trained on, and what its init_from weights were (loaded above, for every
    # system): test.py checks its table against it.
    entry = training_entry(cfg.data) if cfg.get("data") is not None else None
    model.training_data = merge_records([entry] if entry else None,
                                        read_init_record(cfg.init_from) if cfg.get("init_from") else None)
    optimizer = instantiate(cfg.optim)(model)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    # Only rank 0 writes metrics and talks to wandb; the others keep an unused history.
    logger = (instantiate(cfg.logger)(run_dir=run_dir, **({"config": run_config} if "project" in cfg.logger else {}))
              if context.is_main else MetricsLogger(run_dir))  # fmt: skip
    trainer = Trainer(model, task, optimizer, None, trainer_cfg, run_dir, logger, run_config, device,
                      rank=context.rank, world_size=context.world_size)  # fmt: skip
    trainer.scheduler = instantiate(cfg.sched)(optimizer, total_steps=trainer.total_steps)
    checkpoint = resume_path(cfg, run_dir)
    if checkpoint is not None:
        trainer.load_state_dict(load_training_state(checkpoint))
        logger.rewind(trainer.step)  # rows logged after last.pt was written are logged again
        log.info("resumed from %s at step %d (epoch %d)", checkpoint, trainer.step, trainer.epoch)
    try:
        metrics = trainer.fit()
    finally:
        logger.close()
        if context.is_main:
            save_training_curves(logger.history, run_dir / "curves.png", title=f"{run_label(cfg)}: {run_dir.name}")
    log.info("done: %s", {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return metrics


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    torch.set_float32_matmul_precision("high")
    train(cfg)


if __name__ == "__main__":
    run_main(main)  # Hydra's own errors (unknown task=, unknown key) in one line, exit 2
