"""An AesNet image encoder as the starting image tower of another system.

AesNet pretrains an image encoder (``models/aesnet/encoders.py``); when that encoder is an
open_clip tower (``open_clip:LongCLIP-B-16``, ``open_clip:ViT-B-16-quickgelu``, ...), its
tensors are the same open_clip ``VisionTransformer`` that MTPG-AIAA's Long-CLIP
(``model.backbone.visual``) and CG-IAA's CLIP (``scorer.clip.visual``) hold. The mapping:

    AesNet file                                   open_clip visual tower key
    backbone.safetensors (export)  visual.<key>           -> <key>
    best.safetensors / last.pt     backbone.model.<key>   -> <key>
                                   (reference.*, heads.*, logit_scales.*, head.* are not the tower)

Only the tensors move: each system keeps its own preprocessing (see docs/aesnet.md,
"AesNet backbones in the other systems"). A tower of another shape, another activation
(open_clip's plain-GELU ViTs against CLIP's QuickGELU) or a file that does not hold every
tensor of the tower is refused in one line naming both sides.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import file_kind
from .convert import (
    CheckpointError,
    check_finite,
    check_weights_file,
    _block_count,
    load_weights_only,
    read_safetensors,
)
from .weights_file import check_torch_zip, read_safetensors_header
from .torchscript import is_torchscript_archive
from .longclip import LongCLIPArch, list_models as longclip_models

EXPORT_PREFIX = "visual."  # encoders.save_backbone's layout (open_clip's own)
MODEL_PREFIX = "backbone.model."  # AesNetPretrainModel / AesNetScorer state dicts
# open_clip vision_cfg fields that the Long-CLIP / CLIP ViT tower of this package has as well;
# any other field (attentional pooling, no ln_pre, average pooling, layer scale, ...) changes
# what the tower computes without changing every tensor shape.
_PLAIN_VISION_FIELDS = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}


@dataclass(frozen=True)
class VisualArch:
    """What decides whether an image tower's tensors fit another and compute the same function."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    output_dim: int
    activation: str | None = "QuickGELU"  # None: the file does not say

    @classmethod
    def of_longclip(cls, arch: LongCLIPArch) -> "VisualArch":
        """The image half of a ``LongCLIPArch`` (every tower of this package uses QuickGELU)."""
        return cls(arch.image_size, arch.patch_size, arch.vision_width, arch.vision_layers, arch.embed_dim)

    def shape_differs(self, other: "VisualArch") -> bool:
        fields = ("image_size", "patch_size", "width", "layers", "output_dim")
        return any(getattr(self, f) != getattr(other, f) for f in fields)

    def describe(self) -> str:
        activation = self.activation or "activation not recorded"
        return (f"ViT width {self.width}, {self.layers} layers, patch {self.patch_size}, "
                f"{self.image_size}px, output {self.output_dim}, {activation}")  # fmt: skip


@dataclass
class AesNetTower:
    """An AesNet encoder's tower as open_clip visual keys, and where it came from.

    Attributes:
        tensors: ``{open_clip visual key: tensor}`` (``conv1.weight``, ``transformer.resblocks.0...``).
        encoder: the AesNet encoder name (``open_clip:LongCLIP-B-16``), None when the file does not record it.
        source: the file, for errors.
    """

    tensors: dict[str, torch.Tensor]
    encoder: str | None
    source: str

    def arch(self) -> VisualArch:
        """The tower's architecture from its tensor shapes, its activation from the encoder name."""
        needed = ("conv1.weight", "positional_embedding", "proj")
        if any(key not in self.tensors for key in needed):
            raise CheckpointError(f"{self.source}: the AesNet encoder {self.encoder or '(name not recorded)'} is not "
                                  f"an open_clip ViT tower (it lacks one of {', '.join(needed)})")  # fmt: skip
        conv = self.tensors["conv1.weight"]  # [width, 3, patch, patch]
        grid = round((self.tensors["positional_embedding"].shape[0] - 1) ** 0.5)
        return VisualArch(image_size=int(conv.shape[-1]) * grid, patch_size=int(conv.shape[-1]),
                          width=int(conv.shape[0]),
                          layers=_block_count(self.tensors, "transformer.resblocks."),
                          output_dim=int(self.tensors["proj"].shape[1]),
                          activation=encoder_activation(self.encoder, self.source))  # fmt: skip


def encoder_activation(encoder: str | None, source: str = "") -> str | None:
    """``QuickGELU`` / ``GELU`` for an ``open_clip:<model>`` AesNet encoder name; None when unknown.

    Long-CLIP's registered towers use QuickGELU; an open_clip config says ``quick_gelu``.
    A config with vision fields this package's tower lacks is refused (it computes
    something else with tensors that may still fit).
    """
    if not encoder:
        return None
    library, _, model = encoder.partition(":")
    if library != "open_clip" or not model:
        raise CheckpointError(f"{source}: the AesNet encoder {encoder} is not an open_clip tower; only an "
                              "open_clip:<model> encoder can start another system's CLIP image tower")  # fmt: skip
    if model in longclip_models():
        return "QuickGELU"
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        return None
    extra = sorted(set(config.get("vision_cfg", {})) - _PLAIN_VISION_FIELDS)
    if extra:
        raise CheckpointError(f"{source}: the AesNet encoder {encoder} has vision settings {extra} that the "
                              "CLIP ViT towers of MTPG-AIAA and CG-IAA do not have")  # fmt: skip
    return "QuickGELU" if config.get("quick_gelu", False) else "GELU"


def is_aesnet_encoder_file(path: str | Path) -> bool:
    """Whether ``path`` holds an AesNet image encoder (an export, a scorer or a pretraining
    run), told from its tensor names and metadata without reading the tensors when possible."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "safetensors":
        keys, metadata = _safetensors_header(path)
        if metadata.get("library") in ("open_clip", "timm") and "model" in metadata:  # save_backbone
            return True
        return metadata.get("system") == "aesnet" or any(k.startswith(MODEL_PREFIX) for k in keys)
    if kind == "torch" and not is_torchscript_archive(path):
        from ..models.checkpoints import is_training_checkpoint  # the one training-checkpoint test

        try:  # checked against its bytes first, then memory-mapped: only the names are looked at
            check_torch_zip(path)
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - legacy (non-zip) or refused: not an AesNet run; its loader says why
            return False
        weights = state.get("model") if is_training_checkpoint(state) else state
        return isinstance(weights, Mapping) and any(str(k).startswith(MODEL_PREFIX) for k in weights)
    return False


def read_aesnet_tower(path: str | Path) -> AesNetTower:
    """The open_clip tower of an AesNet file: ``backbone.safetensors`` (export), a run's
    ``best.safetensors`` / ``scorer.safetensors`` or its ``last.pt`` / ``best.pt``.

    Read with safetensors or ``torch.load(weights_only=True)`` only.
    """
    path = Path(path)
    check_weights_file(path)
    source = str(path)
    if file_kind(path) == "safetensors":
        _, metadata = _safetensors_header(path)
        state = read_safetensors(path)
        encoder = _encoder_from_metadata(metadata)
    else:
        from ..models.checkpoints import is_training_checkpoint

        raw = load_weights_only(path)
        if is_training_checkpoint(raw):
            state, encoder = dict(raw["model"]), _encoder_from_run_config(raw.get("config") or {})
        elif isinstance(raw, Mapping) and all(isinstance(v, torch.Tensor) for v in raw.values()):
            state, encoder = dict(raw), None
        else:
            raise CheckpointError(f"{path} holds no state dict of tensors ({type(raw).__name__})")
    if encoder and not encoder.startswith("open_clip:"):
        raise CheckpointError(f"{path}: the AesNet encoder {encoder} is not an open_clip ViT tower; only an "
                              "open_clip:<model> encoder can start another system's CLIP image tower")  # fmt: skip
    if any(k.startswith(EXPORT_PREFIX) for k in state):
        tensors = {k[len(EXPORT_PREFIX):]: v for k, v in state.items() if k.startswith(EXPORT_PREFIX)}
    else:
        tensors = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    if not tensors:
        raise CheckpointError(f"{path} holds no AesNet image encoder (no {EXPORT_PREFIX}* or {MODEL_PREFIX}* tensors)")
    check_finite(tensors, path)
    return AesNetTower(tensors, encoder, source)


def load_image_tower(visual: nn.Module, source: str | Path | AesNetTower, *, expected_arch: LongCLIPArch,
                     target: str) -> AesNetTower:  # fmt: skip
    """Load an AesNet encoder's tensors into ``visual`` (an open_clip ``VisionTransformer``), all or nothing.

    Args:
        visual: the tower to fill (``model.backbone.visual``, ``scorer.clip.visual``).
        source: an AesNet file (see ``read_aesnet_tower``) or an already read tower.
        expected_arch: the architecture ``visual`` belongs to.
        target: how errors name ``visual`` (``MTPG-AIAA's image tower``).
    Returns:
        The tower that was loaded (its encoder name and file, for the provenance log).
    Raises:
        CheckpointError: one line naming both architectures when they differ, or the
            missing / surplus tensors when the file would leave part of the tower random.
    """
    tower = source if isinstance(source, AesNetTower) else read_aesnet_tower(source)
    wanted = VisualArch.of_longclip(expected_arch)
    found = tower.arch()
    encoder = tower.encoder or "(encoder name not recorded)"
    if found.shape_differs(wanted) or found.activation not in (None, wanted.activation):
        raise CheckpointError(f"{tower.source}: the AesNet encoder {encoder} ({found.describe()}) does not fit "
                              f"{target} ({wanted.describe()})")  # fmt: skip
    own = visual.state_dict()
    missing = sorted(set(own) - set(tower.tensors))
    surplus = sorted(set(tower.tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tower.tensors) if own[k].shape != tower.tensors[k].shape)
    if missing or surplus or wrong:
        raise CheckpointError(
            f"{tower.source}: refusing a partial load of {target} from the AesNet encoder {encoder}: "
            f"{len(missing)} of {len(own)} tensors missing {missing[:3]}, surplus {surplus[:3]}, "
            f"wrong shape {wrong[:3]}"
        )
    visual.load_state_dict({k: v.to(own[k].dtype) for k, v in tower.tensors.items()}, strict=True)
    return tower


# -- records ---------------------------------------------------------------------------
def _safetensors_header(path: Path) -> tuple[set[str], dict[str, str]]:
    metadata, entries = read_safetensors_header(path)  # every field checked against the file's bytes
    return set(entries), metadata


def _encoder_from_metadata(metadata: Mapping[str, str]) -> str | None:
    if "library" in metadata and "model" in metadata:  # encoders.save_backbone
        return f"{metadata['library']}:{metadata['model']}"
    try:
        config = json.loads(metadata.get("config", "{}"))
    except json.JSONDecodeError:
        return None
    encoder = config.get("encoder") if isinstance(config, dict) else None
    return str(encoder) if encoder else None


def _encoder_from_run_config(config: Mapping[str, Any]) -> str | None:
    """``encoder`` of the run's model config (``model.encoder``, or ``task.model.encoder`` for
    runs whose task named its own model)."""
    for group in (config.get("model"), (config.get("task") or {}).get("model")):
        if isinstance(group, Mapping) and group.get("encoder"):
            return str(group["encoder"])
    return None
