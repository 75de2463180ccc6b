"""MTPG-AIAA from the ``model`` config group (``configs/model/mtpg/*.yaml``, ``_target_`` here).

The config group's keys are the keyword arguments of ``build_mtpg_model``; this is the one
place they become an ``MTPGConfig`` (the engine no longer maps keys by hand).
"""
from __future__ import annotations

from pathlib import Path

from ...backbone.convert import CheckpointError, load_longclip
from .model import MTPGAIAA, MTPGConfig, build_mtpg


def mtpg_config(backbone: str | dict = "LongCLIP-L-14", fusion: str = "official", fusion_heads: int = 8,
                fusion_statistics: bool = False, fusion_layer_statistics: bool = False,
                fusion_description_statistics: bool = False, prompts: str = "official", preprocess: str = "official",
                prompt_context: int = 0, prompt_context_per_level: bool = False) -> MTPGConfig:  # fmt: skip
    """The ``MTPGConfig`` the config group's keys describe (see configs/model/mtpg/longclip_l.yaml)."""
    extra = {}
    if fusion == "token":
        extra["fusion"] = {"num_heads": int(fusion_heads), "token_statistics": bool(fusion_statistics),
                           "layer_statistics": bool(fusion_layer_statistics),
                           "description_statistics": bool(fusion_description_statistics)}  # fmt: skip
    backbone = backbone if isinstance(backbone, str) else dict(backbone)
    return MTPGConfig(backbone=backbone, fusion=fusion, prompts=prompts, preprocess=preprocess,
                      prompt_context=int(prompt_context), prompt_context_per_level=bool(prompt_context_per_level),
                      extra=extra)  # fmt: skip


def build_mtpg_model(backbone_weights: str | None = None, **config) -> MTPGAIAA:
    """A fresh MTPG-AIAA model; its backbone from ``backbone_weights`` (a Long-CLIP ``.pt``)
    when given, else randomly initialised. ``config``: the keys of ``mtpg_config``."""
    weights = None
    if backbone_weights:
        path = Path(backbone_weights)
        if not path.is_file():
            raise CheckpointError(
                f"model.backbone_weights={path} not found: download the Long-CLIP weights "
                "(checkpoints/README.md) or set model.backbone_weights=null to start from random weights"
            )
        weights = load_longclip(path)
    return build_mtpg(mtpg_config(**config), weights)
