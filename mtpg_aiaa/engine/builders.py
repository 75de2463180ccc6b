"""Models for training, from a config group or from earlier weights (``init_from``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..backbone.convert import CheckpointError, is_training_state, load_longclip, load_weights_only, read_state_dict
from ..backbone.torchscript import is_torchscript_archive
from ..models.mtpg.checkpoint import is_official_layout, load_model, official_to_ours
from ..models.mtpg.model import MTPGAIAA, MTPGConfig, build_mtpg
from .checkpointing import load_training_state
from .freezing import apply_freeze_policy

log = logging.getLogger(__name__)


def model_config_from(cfg: DictConfig) -> MTPGConfig:
    extra = {}
    if cfg.fusion == "token":
        extra["fusion"] = {"num_heads": int(cfg.fusion_heads),
                           "token_statistics": bool(cfg.get("fusion_statistics", False)),
                           "layer_statistics": bool(cfg.get("fusion_layer_statistics", False)),
                           "description_statistics": bool(cfg.get("fusion_description_statistics", False))}  # fmt: skip
    return MTPGConfig(backbone=cfg.backbone, fusion=cfg.fusion, prompts=cfg.prompts, preprocess=cfg.preprocess,
                      prompt_context=int(cfg.get("prompt_context", 0)),
                      prompt_context_per_level=bool(cfg.get("prompt_context_per_level", False)), extra=extra)  # fmt: skip


def build_training_model(cfg: DictConfig, init_from: str | None = None) -> MTPGAIAA:
    """The model described by the ``model`` config group, its backbone from
    ``backbone_weights`` (Long-CLIP ``.pt``) when given, then ``init_from`` weights loaded
    where names and shapes match (so a stage-1 backbone starts a stage-2 model with a
    new fusion head), then the freezing policy applied."""
    config = model_config_from(cfg)
    backbone = None
    if cfg.backbone_weights and not init_from:
        path = Path(cfg.backbone_weights)
        if not path.is_file():
            raise CheckpointError(
                f"model.backbone_weights={path} not found: download the Long-CLIP weights "
                "(checkpoints/README.md) or set model.backbone_weights=null to start from random weights"
            )
        backbone = load_longclip(path)
    model = build_mtpg(config, backbone)
    if init_from:
        load_matching_weights(model, init_from)
    apply_freeze_policy(model.backbone, cfg.freeze, cfg.get("freeze_last_n", 0))
    return model


def read_init_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a run dir (its ``best.safetensors``, else ``last.pt``), a training
    ``.pt``, one of our ``.safetensors`` or the authors' ``model_save.pt``."""
    source = Path(source)
    if source.is_dir():
        candidates = [source / "best.safetensors", source / "last.pt"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"init_from={source}: no best.safetensors or last.pt inside")
        source = found
    if source.suffix == ".safetensors":
        return load_model(source).state_dict()
    if not source.is_file():
        raise CheckpointError(f"init_from={source} not found")
    if not is_torchscript_archive(source) and is_training_state(load_weights_only(source)):
        return load_training_state(source)["model"]
    state = read_state_dict(source)
    if is_official_layout(state):
        return official_to_ours(state, str(source))[1]
    raise CheckpointError(f"init_from={source}: not a run, training checkpoint or MTPG-AIAA weights file")


def load_matching_weights(model: MTPGAIAA, source: str | Path) -> None:
    """Copy every tensor of ``source`` whose name and shape match ``model``; log the rest."""
    incoming = read_init_state(source)
    own = model.state_dict()
    matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in matched):
        raise CheckpointError(f"init_from={source}: no backbone weight matches this model's architecture")
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("init_from %s: loaded %d tensors; %d left at initialisation (%s%s)", source, len(matched),
             len(skipped), ", ".join(skipped[:5]), "..." if len(skipped) > 5 else "")  # fmt: skip
