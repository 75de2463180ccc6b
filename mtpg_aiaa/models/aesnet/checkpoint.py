"""AesNet weight files: the scorer and the pretraining model as one safetensors file each
(tensors + config in the metadata, saved and loaded by ``models/checkpoints.py`` as every
system's), and the bare backbone in its own library's layout (``encoders.save_backbone``)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ...backbone.convert import CheckpointError
from ..loading import save_scorer  # noqa: F401 - kept as AesNet's name for saving a scorer
from .model import AesNetScorer


def load_scorer(path: str | Path, metadata: Mapping[str, str] | None = None) -> AesNetScorer:
    """An AesNet scorer file (our format), built from its checked config and loaded strictly
    (``models/checkpoints.load_model_file``)."""
    from ..checkpoints import load_model_file

    model = load_model_file(path, metadata)
    if not isinstance(model, AesNetScorer):
        raise CheckpointError(f"{path} is not an AesNet scorer file (it holds a {model.system} {model.model_kind})")
    return model


def recognizes(keys: set[str], metadata: Mapping[str, str]) -> bool:
    return metadata.get("system") == "aesnet"


def backbone_state_from(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.model.*`` tensors of a pretraining or scorer state dict, prefix removed."""
    prefix = "backbone.model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
