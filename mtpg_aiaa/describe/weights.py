"""Reading checkpoint directories in either of Hugging Face's weight formats."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory (shards named by its index, if any)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [directory / name for name in shards]
    for pattern in ("model.safetensors", "pytorch_model.bin", "model-*.safetensors", "pytorch_model-*.bin"):
        found = sorted(directory.glob(pattern))
        if found:
            return found
    return []


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or ``.bin`` state dict, tensors only (``weights_only`` loading)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files from before torch's zip format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
