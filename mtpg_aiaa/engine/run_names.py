"""``${run_stamp:}``: the part of a default run name that every process of a run agrees on.

Each process composes its own config (torchrun starts N copies of ``train.py``; a requeued
SLURM job composes it again), so a wall-clock timestamp would name a different run
directory per rank and per requeue. The stamp is, in order:

1. ``$MTPG_RUN_STAMP`` when set (``scripts/slurm/train.sbatch`` sets ``slurm<job id>``);
2. under submitit, the job id (``12345`` or ``12345_3`` in an array), which a requeued job
   keeps, so ``resume=auto`` continues from ``last.pt``;
3. under torchrun, ``torchrun-`` and the first 8 characters of the rendezvous id, which
   all workers of one launch share;
4. otherwise the local time, ``YYYYmmdd-HHMMSS``.
"""
from __future__ import annotations

import os
import time

from omegaconf import OmegaConf


def run_stamp() -> str:
    if os.environ.get("MTPG_RUN_STAMP"):
        return os.environ["MTPG_RUN_STAMP"]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        import submitit

        return f"job{submitit.JobEnvironment().job_id}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and run_id != "none" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun-{run_id[:8]}"
    return time.strftime("%Y%m%d-%H%M%S")


def register_resolvers() -> None:
    """Make ``${run_stamp:}`` available to configs, and put the config folders of systems
    declared outside the package on Hydra's search path (``system_configs.py``); idempotent."""
    from .system_configs import register_system_configs

    register_system_configs()
    if not OmegaConf.has_resolver("run_stamp"):
        # use_cache: one stamp per process, however often the config is resolved.
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)
