"""OpenAI-layout CLIP state dicts loaded into open_clip as themselves (77 text positions).

CG-IAA's ``base_model.pt`` is an OpenAI CLIP ViT-B/16 saved from a wrapper module, so every
key carries a ``clip_model.`` prefix; other files hold the bare OpenAI layout. Both load
strictly into open_clip's ``CLIP`` (QuickGELU, sizes read from the tensors). Long-CLIP's
knowledge-preserved stretch to 248 positions happens only when asked for.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from .convert import (
    _NON_PARAMETER_KEYS,
    OPENAI_CONTEXT_LENGTH,
    CheckpointError,
    infer_arch,
    load_state_dict_strict,
    read_state_dict,
    strip_prefix,
    to_longclip_state_dict,
)
from .longclip import LONGCLIP_CONTEXT_LENGTH, LongCLIP

# Prefixes under which wrappers save a CLIP: CG-IAA's BaseModel (``clip_model.``) and
# modules wrapped by DataParallel/DDP (``module.``).
KNOWN_PREFIXES = ("clip_model.", "module.clip_model.", "module.")


def find_clip_prefix(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The prefix in front of ``visual.conv1.weight`` (``""`` for a bare OpenAI state dict)."""
    if "visual.conv1.weight" in state_dict:
        return ""
    for prefix in KNOWN_PREFIXES:
        if f"{prefix}visual.conv1.weight" in state_dict:
            return prefix
    return ""


def build_clip_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    source: str = "state dict",
    context_length: int | None = None,
    prefix: str | None = None,
) -> LongCLIP:
    """An open_clip CLIP (QuickGELU) of the architecture found in ``state_dict``, loaded strictly in fp32.

    Args:
        state_dict: OpenAI-layout tensors, possibly under ``prefix``.
        source: the file name, for errors.
        context_length: ``None`` or 77 keeps the file's 77 positions; 248 stretches them
            (Long-CLIP); anything else is refused.
        prefix: the key prefix; found automatically when ``None``. Keys outside it are refused,
            so a file holding more than one CLIP is not silently half-read.
    """
    prefix = find_clip_prefix(state_dict) if prefix is None else prefix
    outside = sorted(k for k in state_dict if not k.startswith(prefix))
    if outside:
        shown = ", ".join(outside[:5]) + (f", ... ({len(outside)} in all)" if len(outside) > 5 else "")
        raise CheckpointError(f"{source}: keys outside the CLIP prefix {prefix!r}: {shown}")
    tensors = {k: v for k, v in strip_prefix(state_dict, prefix).items() if k not in _NON_PARAMETER_KEYS}
    rows = tensors["positional_embedding"].shape[0] if "positional_embedding" in tensors else None
    if context_length == LONGCLIP_CONTEXT_LENGTH and rows == OPENAI_CONTEXT_LENGTH:
        tensors = to_longclip_state_dict(tensors, source)
    elif context_length not in (None, rows):
        raise CheckpointError(
            f"{source}: cannot give a {rows}-position CLIP {context_length} positions "
            f"(keep it as it is, or stretch 77 to {LONGCLIP_CONTEXT_LENGTH})"
        )
    model = LongCLIP(infer_arch(tensors, source, key_prefix=prefix))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    load_state_dict_strict(model, tensors, source, file_key=lambda key: prefix + key)
    return model


def load_clip(path: str | Path, context_length: int | None = None, device: str | torch.device = "cpu") -> LongCLIP:
    """Load an OpenAI-layout CLIP file (e.g. CG-IAA's ``base_model.pt``) for inference.

    Read with ``torch.load(weights_only=True)`` (or safetensors); the architecture comes from
    the tensor shapes. Returns the model in ``eval()`` mode, fp32, on ``device``; its
    ``encode_image(x)`` is ``ln_post(CLS) @ visual.proj`` as in OpenAI's CLIP.
    """
    source = str(path)
    model = build_clip_from_state_dict(read_state_dict(path), source=source, context_length=context_length)
    return model.to(device).eval()
