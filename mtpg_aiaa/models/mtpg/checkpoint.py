"""MTPG-AIAA weight files: the authors' released layout and our own.

- Official (``model_save.pt``): a plain state dict; ``model.*`` is the whole Long-CLIP
  backbone in its release layout, the head layers sit at the top level, and
  ``logit_scale`` is the head's temperature. The backbone architecture is read from the
  tensor shapes, so no model name is needed.
- Ours (safetensors): the model's state dict plus its config, system and score range
  (JSON in the safetensors metadata, ``models/base.scorer_metadata``), so a file alone
  rebuilds the model, without pickle.

Files are told apart by content (``fileio.file_kind``), never by suffix.

Both are written atomically: to a temporary file in the same folder, then renamed.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ...backbone.convert import (
    CheckpointError,
    cast_like_upstream,
    check_weights_file,
    infer_arch,
    load_state_dict_strict,
    read_state_dict,
    strip_prefix,
    to_longclip_state_dict,
    to_release_layout,
)
from ...backbone.longclip import LongCLIP
from ...backbone.weights_file import read_safetensors_header as read_checked_header
from ...fileio import atomic_write, file_kind
from ..base import FORMAT_NAME
from ..checkpoints import load_model_file, save_model_file
from .model import MTPGAIAA, MTPGConfig, build_mtpg

FORMAT_VERSION = "1"
_OFFICIAL_BACKBONE_PREFIX = "model."


# -- the authors' layout --------------------------------------------------------------
def is_official_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "model.visual.conv1.weight" in state_dict and "fc1.weight" in state_dict


def official_to_ours(state_dict: Mapping[str, torch.Tensor], source: str) -> tuple[MTPGConfig, dict]:
    """Map a released state dict onto :class:`MTPGAIAA` keys; returns its config too."""
    backbone = to_longclip_state_dict(strip_prefix(state_dict, _OFFICIAL_BACKBONE_PREFIX), source)
    arch = infer_arch(backbone, source, key_prefix=_OFFICIAL_BACKBONE_PREFIX)
    mapped = {f"backbone.{k}": v for k, v in backbone.items()}
    for key, value in state_dict.items():
        if key.startswith(_OFFICIAL_BACKBONE_PREFIX):
            continue
        mapped[key if key == "logit_scale" else f"fusion.{key}"] = value
    config = MTPGConfig(backbone=arch.to_dict(), fusion="official", prompts="official", preprocess="official")
    return config, mapped


def ours_to_official(model: MTPGAIAA) -> dict[str, torch.Tensor]:
    """The released layout of ``model`` (``fusion=official`` only)."""
    if model.config.fusion != "official":
        raise ValueError("only fusion=official models can be written in the released layout")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    backbone = to_release_layout(strip_prefix(state, "backbone."))
    out = {f"{_OFFICIAL_BACKBONE_PREFIX}{k}": v for k, v in backbone.items()}
    out.update({k.removeprefix("fusion."): v for k, v in state.items() if k.startswith("fusion.")})
    out["logit_scale"] = state["logit_scale"]
    return out


def load_official_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", backbone_precision: str = "fp32"
) -> MTPGAIAA:
    """Load the authors' ``model_save.pt`` strictly (dead layers included).

    ``backbone_precision='fp16'`` casts the backbone as the authors' loader does on CUDA.
    """
    state_dict = read_state_dict(path)
    if not is_official_layout(state_dict):
        raise CheckpointError(
            f"{path} is not in the released MTPG-AIAA layout (expected 'model.visual.conv1.weight' and 'fc1.weight')"
        )
    config, mapped = official_to_ours(state_dict, str(path))
    return _instantiate(config, mapped, str(path), device, backbone_precision, file_key=official_key)


def official_key(key: str) -> str:
    """The released file's name for one of our keys (``backbone.x`` -> ``model.x``, ``fusion.x`` -> ``x``)."""
    if key.startswith("backbone."):
        return _OFFICIAL_BACKBONE_PREFIX + key.removeprefix("backbone.")
    return key.removeprefix("fusion.")


def save_official_checkpoint(model: MTPGAIAA, path: str | Path) -> Path:
    """Write ``model`` in the released layout (a plain state dict ``torch.save`` file)."""
    state = ours_to_official(model)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


# -- our layout -----------------------------------------------------------------------
def save_model(model: MTPGAIAA, path: str | Path) -> Path:
    """Write weights + config (+ system and score range) to one ``.safetensors`` file."""
    return save_model_file(model, path)


def read_model_config(path: str | Path) -> MTPGConfig:
    """The config stored in one of our ``.safetensors`` files, checked against the file's
    tensor shapes before anything is built: the header alone must not decide how much
    memory a model takes (a ``vocab_size`` of 5e7 in a 14 MB file is refused here)."""
    metadata, shapes = read_safetensors_header(path)
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not an MTPG-AIAA model (no config metadata)")
    try:
        config = MTPGConfig.from_dict(json.loads(metadata["config"]))
        arch = config.arch()
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise CheckpointError(f"{path}: the model config in its metadata is unreadable: {error}") from None
    check_config_matches_shapes(config, arch, shapes, path)
    return config


def read_safetensors_header(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """``(metadata, {key: shape})`` from a ``.safetensors`` header (checked), no tensor read."""
    metadata, tensors = read_checked_header(path)
    return metadata, {key: shape for key, (_dtype, shape) in tensors.items()}


def check_config_matches_shapes(
    config: MTPGConfig, arch, shapes: Mapping[str, tuple[int, ...]], path: str | Path
) -> None:
    """The backbone architecture read from the tensors' shapes (on the meta device, no
    memory) must be the one the metadata declares; the learned prompt context must fit."""
    prefix = "backbone."
    backbone = {key[len(prefix):]: torch.empty(shape, device="meta")
                for key, shape in shapes.items() if key.startswith(prefix)}  # fmt: skip
    found = infer_arch(backbone, str(path), key_prefix=prefix)
    differences = [f"{name}={value} (its tensors: {getattr(found, name)})"
                   for name, value in arch.to_dict().items() if getattr(found, name) != value]  # fmt: skip
    if differences:
        raise CheckpointError(f"{path}: the config in its metadata does not match its tensors: "
                              f"{', '.join(differences)}; the file is corrupted or was edited")  # fmt: skip
    if not 0 <= int(config.prompt_context) <= arch.context_length:
        raise CheckpointError(f"{path}: prompt_context={config.prompt_context} in its metadata is outside "
                              f"[0, {arch.context_length}]")  # fmt: skip


def load_model(
    path: str | Path, device: str | torch.device = "cpu", backbone_precision: str = "fp32"
) -> MTPGAIAA:
    """Load any MTPG-AIAA weights file: ours (safetensors) or the released layout, told apart by content."""
    path = Path(path)
    check_weights_file(path)
    if file_kind(path) == "safetensors":
        return load_our_file(path, device=device, backbone_precision=backbone_precision)
    return load_official_checkpoint(path, device, backbone_precision)


def load_our_file(path: str | Path, metadata: Mapping[str, str] | None = None, device: str | torch.device = "cpu",
                  backbone_precision: str = "fp32") -> MTPGAIAA:  # fmt: skip
    """One of our safetensors files (``metadata`` is re-read from the file when not given):
    its config checked against its tensors (``read_model_config``), then built and loaded
    strictly the way every system's files are (``models/checkpoints.load_model_file``)."""
    read_model_config(path)
    model = load_model_file(path, metadata)
    if not isinstance(model, MTPGAIAA):
        raise CheckpointError(f"{path} holds a {model.system} model, not an MTPG-AIAA one")
    return _set_precision(model, backbone_precision).to(device).eval()


def is_official_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds the authors' released layout (read from its content, not its suffix)."""
    path = Path(path)
    if not path.is_file() or file_kind(path) != "torch":
        return False
    try:
        return is_official_layout(read_state_dict(path))
    except CheckpointError:
        return False


def _instantiate(
    config: MTPGConfig, state_dict: Mapping[str, torch.Tensor], source: str, device, backbone_precision: str,
    file_key: Callable[[str], str] = lambda key: key,
) -> MTPGAIAA:
    model = build_mtpg(config, LongCLIP(config.arch()))
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    load_state_dict_strict(model, floats, source, file_key)
    return _set_precision(model, backbone_precision).to(device).eval()


def _set_precision(model: MTPGAIAA, backbone_precision: str) -> MTPGAIAA:
    if backbone_precision == "fp16":
        cast_like_upstream(model.backbone)
    elif backbone_precision != "fp32":
        raise ValueError(f"backbone_precision must be 'fp32' or 'fp16', got {backbone_precision!r}")
    return model
