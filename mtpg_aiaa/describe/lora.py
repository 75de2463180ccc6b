"""PEFT LoRA adapters without PEFT: read the A/B matrices and fold them into the base weights."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mtpg_aiaa.describe.weights import load_state_file

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraAdapter:
    """``pairs[module] = (A [r, in], B [out, r])``; merged delta is ``scale * B @ A``."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float
    rank: int


def load_lora_adapter(lora_dir: Path) -> LoraAdapter:
    """Read a PEFT LoRA adapter (uniform rank and alpha, as GalleryGPT's r=128, alpha=256)."""
    config = json.loads((lora_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError(f"{lora_dir}: per-module rank_pattern / alpha_pattern are not supported")
    if config.get("fan_in_fan_out"):
        raise ValueError(f"{lora_dir}: fan_in_fan_out=true (Conv1D layers) is not a LLaMA adapter")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    path = next(lora_dir / name for name in ("adapter_model.safetensors", "adapter_model.bin")
                if (lora_dir / name).is_file())  # fmt: skip
    halves: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in load_state_file(path).items():
        match = _LORA_KEY.match(strip_peft_prefix(key))
        if match is None:
            unknown.append(key)
            continue
        halves.setdefault(match["module"], {})[match["side"]] = value
    if unknown:
        raise ValueError(f"{path}: keys that are not LoRA A/B weights: {unknown[:10]}")
    incomplete = sorted(module for module, sides in halves.items() if set(sides) != {"A", "B"})
    if incomplete:
        raise ValueError(f"{path}: LoRA modules without both A and B: {incomplete[:10]}")
    pairs = {module: (sides["A"], sides["B"]) for module, sides in halves.items()}
    return LoraAdapter(pairs=pairs, scale=scale, rank=rank)


def merge_lora_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``weight + scale * b @ a`` in fp32, returned in ``weight``'s dtype. Shapes: [out, in], [r, in], [out, r]."""
    if (b.shape[0], a.shape[1]) != tuple(weight.shape) or a.shape[0] != b.shape[1]:
        raise ValueError(f"LoRA shapes A {tuple(a.shape)}, B {tuple(b.shape)} do not fit weight {tuple(weight.shape)}")
    return (weight.float() + scale * (b.float() @ a.float())).to(weight.dtype)


def strip_peft_prefix(key: str) -> str:
    """``base_model.model.<key>`` (how PEFT saves a wrapped model's weights) -> ``<key>``."""
    return key[len("base_model.model."):] if key.startswith("base_model.model.") else key
