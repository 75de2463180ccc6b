"""MTPG-AIAA, registered as ``mtpg``: Long-CLIP image + description features, fused, matched
against five aesthetic-level prompts; scores on 0-1 (the expected level)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..registry import ModelEntry, register_model
from .checkpoint import is_official_layout, load_official_checkpoint, load_our_file
from .factory import build_mtpg_model, mtpg_config
from .model import MTPGAIAA, MTPGConfig, build_mtpg


def _recognizes(keys: set[str], metadata: Mapping[str, str]) -> bool:
    """The authors' released layout (``model.*`` backbone beside the head's ``fc1``)."""
    return is_official_layout(keys)


def _load(path: str | Path, metadata: Mapping[str, str], device="cpu", backbone_precision: str = "fp32") -> MTPGAIAA:
    if metadata.get("config"):
        return load_our_file(path, metadata, device=device, backbone_precision=backbone_precision)
    return load_official_checkpoint(path, device, backbone_precision)


register_model(ModelEntry(
    name="mtpg", build=build_mtpg_model, load=_load, recognizes=_recognizes,
    description="MTPG-AIAA: Long-CLIP image + description, five level prompts; score 0-1",
    weights_help="the authors' model_save.pt from the MTPG-AIAA release (checkpoints/README.md), or a "
                 "best.safetensors of python train.py stage=finetune",
))  # fmt: skip

__all__ = ["MTPGAIAA", "MTPGConfig", "build_mtpg", "build_mtpg_model", "mtpg_config"]
