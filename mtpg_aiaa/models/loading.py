"""Weight files of every system: ``save_scorer`` writes one, ``load_model`` reads any.

``load_model`` tells files apart by their content, never their suffix:

- a ``.safetensors`` file (by its header) with this package's metadata names its
  ``system``; files written before systems were recorded are MTPG-AIAA's;
- any other safetensors or PyTorch state dict is offered to each registered system's
  ``recognizes(keys, metadata)`` (the MTPG authors' ``model_save.pt`` is recognised by its
  key layout);
- a training checkpoint (``last.pt``/``best.pt`` from ``train.py``) is rebuilt from the run
  config it carries and loaded with its raw (not averaged) model weights.

Anything else gets a one-line ``CheckpointError`` saying what the file is.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..backbone.convert import CheckpointError, describe_load_error, read_state_dict
from ..backbone.torchscript import is_torchscript_archive
from ..fileio import atomic_write, file_kind
from ..data.provenance import decode_record
from .base import FORMAT_NAME, TRAINING_DATA_KEY, Scorer, read_metadata, scorer_metadata
from .registry import ModelEntry, entries, get_model_entry

# Model-config keys that only training reads (the freezing policy); dropped when a model is
# rebuilt for scoring, and by the engine before it calls a system's ``build``.
TRAINING_KEYS = ("freeze", "freeze_last_n")
# What every training checkpoint holds (engine/checkpointing.py writes them).
_TRAINING_STATE_KEYS = ("model", "optimizer", "step", "config")
_LEGACY_SYSTEM = "mtpg"  # our safetensors files written before "system" was recorded


def save_scorer(scorer: Scorer, path: str | Path) -> Path:
    """``scorer``'s weights and ``scorer_metadata`` as one ``.safetensors`` file (atomic)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}
    metadata = scorer_metadata(scorer)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_model(path: str | Path, device: str | torch.device = "cpu", **options: Any) -> Scorer:
    """Any system's weights file -> its ``Scorer`` in eval mode on ``device``.

    ``options`` go to the system's loader (MTPG: ``backbone_precision="fp16"``).
    Raises ``CheckpointError`` (one line, naming the file) for a missing file, a file of
    no registered system, or a training checkpoint whose run config cannot rebuild it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    kind = file_kind(path)
    if kind == "safetensors":
        return _load_safetensors(path, device, options)
    if kind == "torch":
        return _load_torch_file(path, device, options)
    raise CheckpointError(f"{path} is neither a safetensors nor a PyTorch file (first bytes unrecognised)")


def identify(path: str | Path) -> str:
    """One line saying what ``path`` holds (system and layout), without building a model."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "safetensors":
        metadata = read_metadata(path)
        if metadata.get("format") == FORMAT_NAME:
            return f"{metadata.get('system', _LEGACY_SYSTEM)} weights (safetensors, this package's format)"
        entry = _recognising_entry(_safetensors_keys(path), metadata)
        return f"{entry.name} weights (safetensors)" if entry else "a safetensors file of no registered system"
    if kind == "torch":
        raw = _torch_load(path)
        if _is_training_state(raw):
            return "a training checkpoint (model, optimizer, step, run config) written by train.py"
        entry = _recognising_entry(set(raw), {}) if isinstance(raw, Mapping) else None
        return f"{entry.name} weights (PyTorch state dict)" if entry else "a PyTorch file of no registered system"
    return "not a weights file"


# -- safetensors -------------------------------------------------------------------------
def _safetensors_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


def _load_safetensors(path: Path, device, options: dict) -> Scorer:
    metadata = read_metadata(path)
    if metadata.get("format") == FORMAT_NAME:
        entry = _entry_or_error(metadata.get("system", _LEGACY_SYSTEM), path)
    else:
        entry = _recognising_entry(_safetensors_keys(path), metadata)
        if entry is None:
            raise CheckpointError(
                f"{path} is a safetensors file without this package's metadata whose tensor names match no "
                f"registered system ({', '.join(sorted(_names()))}); is it a backbone rather than a scorer?"
            )
    ours = metadata.get("format") == FORMAT_NAME
    kind = f"{entry.name} weights (safetensors, {'our format' if ours else 'recognised by its keys'})"
    model = _call_loader(entry, path, metadata, device, options, kind)
    model.training_data = decode_record(metadata.get(TRAINING_DATA_KEY), str(path)) if ours else None
    return model


# -- PyTorch files ------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    """The object a PyTorch file holds, read without running code: a TorchScript archive's
    tensors as data, anything else through the weights-only unpickler."""
    if is_torchscript_archive(path):
        return read_state_dict(path)
    try:
        with open(path, "rb") as handle:  # a handle: torch.load would read a ".safetensors" name as safetensors
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised naming the file, without PyTorch's advice to unpickle
        raise CheckpointError(f"cannot read {path}: {describe_load_error(error)}") from None


def _is_training_state(raw: Any) -> bool:
    return isinstance(raw, Mapping) and all(key in raw for key in _TRAINING_STATE_KEYS)


def _load_torch_file(path: Path, device, options: dict) -> Scorer:
    raw = _torch_load(path)
    if _is_training_state(raw):
        return _load_training_state(path, raw, device)
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} is a PyTorch file but not a state dict of tensors ({type(raw).__name__})")
    entry = _recognising_entry(set(raw), {})
    if entry is None:
        shown = ", ".join(sorted(raw)[:3])
        raise CheckpointError(f"{path} is a PyTorch state dict whose keys ({shown}, ...) match no registered system "
                              f"({', '.join(sorted(_names()))})")  # fmt: skip
    return _call_loader(entry, path, {}, device, options, f"{entry.name} weights (PyTorch state dict)")


def _load_training_state(path: Path, state: Mapping[str, Any], device) -> Scorer:
    """A ``train.py`` checkpoint: the model its run config describes, with its ``model`` weights."""
    config = state.get("config") or {}
    task_model = (config.get("task") or {}).get("model") or {}
    # a task that builds its own model (train.py's task.build_model) records it as task.model
    model_config = dict(task_model if "_target_" in task_model else config.get("model") or {})
    entry = _entry_for_model_config(model_config)
    if entry is None:
        raise CheckpointError(
            f"{path} is a training checkpoint whose run config names no registered model "
            f"(model._target_={model_config.get('_target_')!r}); score the run's best.safetensors instead"
        )
    kwargs = {k: v for k, v in model_config.items() if not k.startswith("_") and k not in TRAINING_KEYS}
    if "backbone_weights" in kwargs:
        kwargs["backbone_weights"] = None  # every weight comes from the checkpoint
    model = entry.build(**kwargs)
    incoming = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    missing, unexpected = (sorted(set(model.state_dict()) - set(incoming)), sorted(set(incoming) - set(model.state_dict())))
    if missing or unexpected:
        raise CheckpointError(f"{path}: training checkpoint weights do not fit the model its config builds "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")  # fmt: skip
    model.load_state_dict(incoming)
    model.weights_kind = f"{entry.name} training checkpoint (raw weights, step {state.get('step')})"
    model.training_data = state.get(TRAINING_DATA_KEY) or None
    return model.to(device).eval()


def _entry_for_model_config(model_config: Mapping[str, Any]) -> ModelEntry | None:
    target = str(model_config.get("_target_", ""))
    for entry in entries():
        if target and target.rsplit(".", 1)[-1] == getattr(entry.build, "__name__", None):
            return entry
    if not target and "fusion" in model_config:  # run configs from before model._target_ existed
        return get_model_entry(_LEGACY_SYSTEM)
    return None


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
