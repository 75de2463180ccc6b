"""Training checkpoints (``last.pt`` / ``best.pt``): everything needed to resume exactly.

A checkpoint is a dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: ``model`` (unwrapped from DDP), ``optimizer``,
``scheduler``, ``scaler``, ``step`` (optimizer steps done), ``epoch``, ``batch_in_epoch``
(micro-batches of ``epoch`` already consumed), ``best_metric``, ``rng`` (torch CPU
generator state), ``config`` (the resolved run config), ``training_data`` (what the
model was trained on, ``data/provenance.py``; absent in older files) and the model record
``system``, ``model_kind``, ``model_config`` (``models/checkpoints.model_record``: what
``load_model`` rebuilds the model from; absent in older files). Written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbone.convert import CheckpointError, check_finite
from ..models.checkpoints import read_weights_only
from ..fileio import atomic_write

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch", "config")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP / compile wrapper."""
    while hasattr(model, "module"):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_training_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see module doc) atomically; a failed write keeps the previous file."""
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"training state lacks {missing}")
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint without executing pickled code."""
    path = Path(path)
    state = read_weights_only(path)
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint (missing {missing}); resume= and "
                              "init_from= take the last.pt or best.pt of a run directory")  # fmt: skip
    check_finite(state["model"], path)
    return state
