"""Weight files of every system: ``load_model`` reads any (``save_model_file`` in
``checkpoints.py`` writes ours).

``load_model`` tells files apart by their content, never their suffix:

- a ``.safetensors`` file (by its header) with this package's metadata names its
  ``system`` (and, for models other than scorers, its ``model`` kind: a CG-IAA ``expert``,
  an AesNet ``pretrain`` model); files written before systems were recorded are MTPG-AIAA's;
- any other safetensors or PyTorch state dict is offered to each registered system's
  ``recognizes(keys, metadata)`` (the MTPG authors' ``model_save.pt`` is recognised by its
  key layout);
- a training checkpoint (``last.pt``/``best.pt`` from ``train.py``) is rebuilt from the model
  record it carries (system, kind, config: ``checkpoints.model_record``) and loaded with its
  raw (not averaged) model weights.

Anything else gets a one-line ``CheckpointError`` saying what the file is.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..backbone.convert import CheckpointError
from ..backbone.weights_file import check_weights_file, read_safetensors_header
from ..fileio import file_kind
from ..data.provenance import decode_record
from .base import FORMAT_NAME, MODEL_KIND_KEY, TRAINING_DATA_KEY, SavedModel, Scorer
from .checkpoints import (
    build_recorded_model,
    is_training_checkpoint,
    load_model_file,
    read_weights_only,
    save_model_file,
)
from .registry import ModelEntry, entries, get_model_entry

# Model-config keys that only training reads (the freezing policy); dropped when a model is
# rebuilt for scoring, and by the engine before it calls a system's ``build``.
TRAINING_KEYS = ("freeze", "freeze_last_n")
# Model-config keys that only training reads (the freezing policy); dropped by the engine
# before it calls a system's ``build``.
TRAINING_KEYS = ("freeze", "freeze_last_n")
_LEGACY_SYSTEM = "mtpg"  # our safetensors files written before "system" was recorded


def save_scorer(scorer: Scorer, path: str | Path) -> Path:
    """``scorer``'s weights and metadata as one ``.safetensors`` file (``checkpoints.save_model_file``)."""
    return save_model_file(scorer, path)


def load_model(path: str | Path, device: str | torch.device = "cpu", expect: str | None = None,
               **options: Any) -> SavedModel:  # fmt: skip
    """Any system's weights file -> its model in eval mode on ``device``: a ``Scorer``, or
    another kind a system saves (a CG-IAA ``expert``, an AesNet ``pretrain`` model); its
    ``weights_kind`` says which, and what the file was.

    ``expect="scorer"`` (say) refuses a file holding another kind, in one line.
    ``options`` go to the system's loader (MTPG: ``backbone_precision="fp16"``).
    Raises ``CheckpointError`` (one line, naming the file) for a missing file, a file of
    no registered system, or a training checkpoint without a model record.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    check_weights_file(path)  # readable and not empty
    kind = file_kind(path)
    if kind == "safetensors":
        model = _load_safetensors(path, device, options)
    elif kind == "torch":
        model = _load_torch_file(path, device, options)
    else:
        raise CheckpointError(f"{path} is neither a safetensors nor a PyTorch file (first bytes unrecognised)")
    if expect is not None and model.model_kind != expect:
        raise CheckpointError(f"{path} holds a {model.system} {model.model_kind} model, not a {expect}")
    return model


def identify(path: str | Path) -> str:
    """One line saying what ``path`` holds (system and layout), without building a model."""
    path = Path(path)
    check_weights_file(path)
    kind = file_kind(path)
    if kind == "safetensors":
        metadata, shapes = read_safetensors_header(path)
        if metadata.get("format") == FORMAT_NAME:
            what = metadata.get(MODEL_KIND_KEY, "scorer")
            return f"{metadata.get('system', _LEGACY_SYSTEM)} {what} weights (safetensors, this package's format)"
        entry = _recognising_entry(set(shapes), metadata)
        return f"{entry.name} weights (safetensors)" if entry else "a safetensors file of no registered system"
    if kind == "torch":
        raw = read_weights_only(path)
        if is_training_checkpoint(raw):
            recorded = f" of a {raw['system']} {raw.get('model_kind', 'model')}" if isinstance(raw.get("system"), str) else ""
            return f"a training checkpoint{recorded} (model, optimizer, step, run config) written by train.py"
        entry = _recognising_entry(set(raw), {}) if isinstance(raw, Mapping) else None
        return f"{entry.name} weights (PyTorch state dict)" if entry else "a PyTorch file of no registered system"
    return "not a weights file"


# -- safetensors -------------------------------------------------------------------------
def _load_safetensors(path: Path, device, options: dict) -> SavedModel:
    metadata, shapes = read_safetensors_header(path)
    ours = metadata.get("format") == FORMAT_NAME
    if ours and MODEL_KIND_KEY in metadata:  # a model other than a scorer: one loader for every system
        model = load_model_file(path, metadata)
        model.weights_kind = f"{model.system} {model.model_kind} (safetensors, our format)"
    else:
        if ours:
            entry = _entry_or_error(metadata.get("system", _LEGACY_SYSTEM), path)
        else:
            entry = _recognising_entry(set(shapes), metadata)
            if entry is None:
                raise CheckpointError(
                    f"{path} is a safetensors file without this package's metadata whose tensor names match no "
                    f"registered system ({', '.join(sorted(_names()))}); is it a backbone rather than a scorer?"
                )
        kind = f"{entry.name} weights (safetensors, {'our format' if ours else 'recognised by its keys'})"
        model = _call_loader(entry, path, metadata, device, options, kind)
    model.training_data = decode_record(metadata.get(TRAINING_DATA_KEY), str(path)) if ours else None
    return model.to(device).eval()


# -- PyTorch files ------------------------------------------------------------------------
def _load_torch_file(path: Path, device, options: dict) -> SavedModel:
    raw = read_weights_only(path)
    if is_training_checkpoint(raw):
        return build_recorded_model(raw, path).to(device)
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} is a PyTorch file but not a state dict of tensors ({type(raw).__name__})")
    entry = _recognising_entry(set(raw), {})
    if entry is None:
        shown = ", ".join(sorted(raw)[:3])
        raise CheckpointError(f"{path} is a PyTorch state dict whose keys ({shown}, ...) match no registered system "
                              f"({', '.join(sorted(_names()))})")  # fmt: skip
    return _call_loader(entry, path, {}, device, options, f"{entry.name} weights (PyTorch state dict)")


# -- shared -------------------------------------------------------------------------------
def _names() -> list[str]:
    return [entry.name for entry in entries()]


def _recognising_entry(keys: set[str], metadata: Mapping[str, str]) -> ModelEntry | None:
    for entry in entries():
        if entry.recognizes is not None and entry.load is not None and entry.recognizes(keys, metadata):
            return entry
    return None


def _entry_or_error(system: str, path: Path) -> ModelEntry:
    try:
        entry = get_model_entry(system)
    except KeyError:
        raise CheckpointError(f"{path} holds a {system!r} model, which is not registered here "
                              f"(registered: {', '.join(sorted(_names()))})") from None  # fmt: skip
    if entry.load is None:
        raise CheckpointError(f"{path} holds a {system!r} model, but that system registers no loader")
    return entry


def _call_loader(entry: ModelEntry, path: Path, metadata: Mapping[str, str], device, options: dict,
                 kind: str) -> Scorer:  # fmt: skip
    accepted = inspect.signature(entry.load).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    model = entry.load(path, metadata, **{k: v for k, v in options.items() if takes_any or k in accepted})
    model.weights_kind = kind  # what the file was, for reports (test.py's metrics.json)
    return model.to(device).eval()
