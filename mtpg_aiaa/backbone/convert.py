"""Reading Long-CLIP / OpenAI CLIP weights into :class:`LongCLIP`.

File formats accepted (see ``docs/checkpoints.md``):
- the official Long-CLIP release (``longclip-B.pt``, ``longclip-L.pt``): a pickled
  ``OrderedDict`` of tensors in the OpenAI key layout plus ``positional_embedding_res``;
- an OpenAI CLIP ViT state dict (77 positions), stretched to 248 positions;
- OpenAI's TorchScript archives (``ViT-L-14.pt``), whose tensors are read without running code;
- ``.safetensors`` files holding either of the state dicts above.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from open_clip.model import convert_weights_to_lp

from .torchscript import TorchScriptReadError, is_torchscript_archive, read_torchscript_state_dict
from .weights_file import (  # noqa: F401 - CheckpointError and the readers are imported from here by callers
    ZIP_ERRORS,
    CheckpointError,
    check_tensor_views,
    check_torch_zip,
    check_weights_file,
    describe_load_error,
    load_weights_only,
    read_safetensors,
)
from .longclip import KEPT_POSITIONS, LONGCLIP_CONTEXT_LENGTH, LongCLIP, LongCLIPArch
from ..fileio import file_kind

log = logging.getLogger(__name__)

OPENAI_CONTEXT_LENGTH = 77
# Metadata entries of OpenAI's TorchScript state dicts that are not parameters.
# ``attn_mask`` is the causal text mask, a buffer derived from the context length that
# traced archives store although open_clip does not persist it.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, loaded on CPU without executing any code in it.

    A safetensors file (told by its content, whatever its suffix) is read with safetensors;
    OpenAI's TorchScript archives with
    :func:`read_torchscript_state_dict` (their tensors read as data, their code never
    run); anything else with ``torch.load(weights_only=True)``. Every floating tensor
    must be finite.

    Raises:
        CheckpointError: naming ``path`` and the cause (empty, truncated, code objects,
            a training checkpoint, NaN weights, ...).
    """
    path = Path(path)
    check_weights_file(path)
    if file_kind(path) == "safetensors":
        state = read_safetensors(path)
    elif is_torchscript_archive(path):
        check_torch_zip(path, compressed_text=True)  # stored data entries, each inside the file, within the budget
        try:
            state = read_torchscript_state_dict(path)
        except (TorchScriptReadError, RecursionError, *ZIP_ERRORS) as error:
            raise CheckpointError(
                f"cannot read the TorchScript archive {path} as data: {error}. If the file is from a source you "
                "trust, convert it on that machine: open it with PyTorch's TorchScript loader and save its state_dict "
                "as a plain .pt or .safetensors file"
            ) from None
    else:
        obj = load_weights_only(path)
        if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
            obj = obj["state_dict"]
        from ..models.checkpoints import is_training_checkpoint, training_checkpoint_message  # models import this module

        if is_training_checkpoint(obj):
            raise CheckpointError(training_checkpoint_message(path))
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
        state = dict(obj)
    check_finite(state, path)
    return state


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """No NaN in any floating tensor, or a :class:`CheckpointError` naming the file and the first bad key.

    Infinities are allowed: attention masks hold ``-inf`` by design. Views larger than
    their storage are refused first (``isnan`` would make them dense).
    """
    check_tensor_views(dict(state), path)
    for key, value in state.items():
        if value.is_floating_point() and value.numel() and bool(torch.isnan(value).any()):
            bad = int(torch.isnan(value).sum())
            raise CheckpointError(f"{path}: tensor {key!r} has {bad} NaN value(s); the file is corrupted "
                                  "or was saved from a diverged run")  # fmt: skip


def infer_arch(state_dict: Mapping[str, torch.Tensor], source: str = "state dict", key_prefix: str = "") -> LongCLIPArch:
    """Read the architecture from tensor shapes, as the upstream Long-CLIP loader does.

    ``key_prefix`` is how the file prefixes these keys (``model.`` in MTPG files), for errors.
    """
    try:
        conv = state_dict["visual.conv1.weight"]
        # Layers from the highest block index, not a count of keys: a block missing one key
        # is then reported as that missing key, not as every later block being "unexpected".
        vision_layers = _block_count(state_dict, "visual.transformer.resblocks.")
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return LongCLIPArch(
            embed_dim=state_dict["text_projection"].shape[1],
            image_size=conv.shape[-1] * grid,
            patch_size=conv.shape[-1],
            vision_width=conv.shape[0],
            vision_layers=vision_layers,
            text_width=state_dict["ln_final.weight"].shape[0],
            text_layers=_block_count(state_dict, "transformer.resblocks."),
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
        )
    except KeyError as missing:
        raise CheckpointError(
            f"{source} is not a CLIP ViT state dict: key '{key_prefix}{missing.args[0]}' is missing"
        ) from None


def _block_count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = [int(k[len(prefix):].split(".", 1)[0]) for k in state_dict
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()]  # fmt: skip
    return max(indices) + 1 if indices else 0


def stretch_positional_embedding(old: torch.Tensor) -> torch.Tensor:
    """Knowledge-preserved stretching of a 77-row table to 248 rows (Long-CLIP, Sec. 3.1).

    Rows 0..19 are kept; each later gap is interpolated four times; the last four rows
    extrapolate from rows 75 and 76.
    """
    if old.shape[0] != OPENAI_CONTEXT_LENGTH:
        raise ValueError(f"expected a {OPENAI_CONTEXT_LENGTH}-row table, got {tuple(old.shape)}")
    src = old.float()
    new = torch.empty(LONGCLIP_CONTEXT_LENGTH, old.shape[1], dtype=torch.float32)
    new[:KEPT_POSITIONS] = src[:KEPT_POSITIONS]
    for k in range(4):
        # positions 20+4i+k for i = 0..55 interpolate between old rows 20+i and 21+i
        new[KEPT_POSITIONS + k : 244 : 4] = ((4 - k) * src[20:76] + k * src[21:77]) / 4
        new[244 + k] = src[76] + k * (src[76] - src[75]) / 4
    return new.to(old.dtype)


def to_longclip_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """A state dict that loads strictly into :class:`LongCLIP`.

    Long-CLIP's two positional tables become the one table the forward pass uses:
    ``P[:20] = positional_embedding[:20]``, ``P[20:] = positional_embedding_res[20:]``.
    A 77-position (OpenAI CLIP) table is stretched to 248 positions.
    """
    out = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETER_KEYS}
    if "positional_embedding" not in out:
        raise CheckpointError(f"{source} has no 'positional_embedding'")
    pos = out["positional_embedding"]
    res = out.pop("positional_embedding_res", None)
    if res is not None:
        if res.shape != pos.shape:
            raise CheckpointError(
                f"{source}: positional_embedding {tuple(pos.shape)} and positional_embedding_res "
                f"{tuple(res.shape)} differ in shape"
            )
        merged = pos.clone()
        merged[KEPT_POSITIONS:] = res[KEPT_POSITIONS:]
        out["positional_embedding"] = merged
    elif pos.shape[0] == OPENAI_CONTEXT_LENGTH:
        log.info("%s has 77 text positions: stretching to 248 (knowledge-preserved)", source)
        out["positional_embedding"] = stretch_positional_embedding(pos)
    elif pos.shape[0] != LONGCLIP_CONTEXT_LENGTH:
        raise CheckpointError(
            f"{source}: positional_embedding has {pos.shape[0]} rows; expected 77 (CLIP) or 248 (Long-CLIP)"
        )
    return out


def to_release_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse for writing: Long-CLIP's release layout with ``positional_embedding_res``.

    Both tables hold the merged one, so re-reading gives exactly the same model.
    """
    out = dict(state_dict)
    out["positional_embedding_res"] = out["positional_embedding"].clone()
    return out


def load_state_dict_strict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    file_key: Callable[[str], str] = lambda key: key,
) -> None:
    """``load_state_dict(strict=True)`` with an error that lists missing, unexpected and
    mis-shaped keys, each named as the file names it (``file_key`` maps model -> file key)."""
    expected = model.state_dict()
    missing = sorted(file_key(k) for k in set(expected) - set(state_dict))
    unexpected = sorted(file_key(k) for k in set(state_dict) - set(expected))
    mis_shaped = [
        f"{file_key(k)}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError(f"{source} does not match the model: {'; '.join(parts)}".replace("\n", " "))
    model.load_state_dict(state_dict, strict=True)


def build_longclip_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
) -> LongCLIP:
    """A :class:`LongCLIP` of the architecture found in ``state_dict``, weights loaded strictly (fp32)."""
    converted = to_longclip_state_dict(state_dict, source)
    arch = infer_arch(converted, source)
    model = LongCLIP(arch)
    converted = {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}
    load_state_dict_strict(model, converted, source)
    return model


def cast_like_upstream(model: LongCLIP, dtype: torch.dtype = torch.float16) -> LongCLIP:
    """Cast linear/conv/attention weights and both projections to ``dtype``, as the upstream
    Long-CLIP loader does on CUDA (LayerNorms, embeddings and ``logit_scale`` stay fp32)."""
    convert_weights_to_lp(model, dtype)
    return model


def load_longclip(path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> LongCLIP:
    """Load ``longclip-B.pt`` / ``longclip-L.pt`` (or an OpenAI CLIP ViT state dict) for inference.

    Args:
        path: the weights file.
        device: where to put the model.
        precision: ``fp32``, or ``fp16`` for the upstream CUDA behaviour (see ``cast_like_upstream``).
    Returns:
        The model in ``eval()`` mode.
    """
    model = build_longclip_from_state_dict(read_state_dict(path), source=str(path))
    if precision == "fp16":
        cast_like_upstream(model)
    elif precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    return model.to(device).eval()


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix`` with the prefix removed (e.g. ``model.`` of MTPG files)."""
    pattern = re.compile("^" + re.escape(prefix))
    return {pattern.sub("", k): v for k, v in state_dict.items() if k.startswith(prefix)}
