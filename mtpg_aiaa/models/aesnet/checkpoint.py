"""AesNet weight files: the scorer as one safetensors file (tensors + config in the
metadata, as every system of this package), and the bare backbone in its own library's
layout (``encoders.save_backbone``)."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ...backbone.convert import CheckpointError
from ...fileio import atomic_write
from ..base import scorer_metadata
from .model import AesNetScorer, AesNetScorerConfig


def save_scorer(scorer: AesNetScorer, path: str | Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}
    metadata = scorer_metadata(scorer)
    return atomic_write(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def load_scorer(path: str | Path, metadata: Mapping[str, str] | None = None) -> AesNetScorer:
    from safetensors.torch import load_file

    from ..base import read_metadata

    metadata = metadata if metadata is not None else read_metadata(path)
    if metadata.get("system") != "aesnet" or "config" not in metadata:
        raise CheckpointError(f"{path} is not an AesNet scorer file (metadata system={metadata.get('system')!r})")
    scorer = AesNetScorer(AesNetScorerConfig(**json.loads(metadata["config"])))
    state = load_file(str(path), device="cpu")
    missing, unexpected = scorer.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return scorer.eval()


def recognizes(keys: set[str], metadata: Mapping[str, str]) -> bool:
    return metadata.get("system") == "aesnet"


def backbone_state_from(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.model.*`` tensors of a pretraining or scorer state dict, prefix removed."""
    prefix = "backbone.model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
