"""The one checkpoint module: how this package's own weight files and training checkpoints
are told apart, read, built from and written, for every system.

- :func:`is_training_checkpoint`: a ``last.pt`` / ``best.pt`` written by the trainer;
- :func:`read_weights_only`: any PyTorch file read as data (a TorchScript archive's tensors,
  anything else through the weights-only unpickler), bounded before it allocates
  (``backbone/weights_file.py``);
- :func:`save_model_file` / :func:`load_model_file`: our ``.safetensors`` format, saved and
  rebuilt ("build from the saved config, load strictly") once for every ``SavedModel``;
- :func:`model_record` / :func:`build_recorded_model`: what a training checkpoint records
  about its model (system, kind, config) and the model rebuilt from that record;
- :func:`load_matching_weights`: ``init_from``'s partial loading with its backbone guard.

A file names data, never places or code: the class comes from the registered system the
file names, the config is checked field by field (unknown keys, wrong types, integers larger
than the file's tensors could need), the model is first built on the meta device and its
tensor shapes compared with the file's before any memory is allocated.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import typing
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbone.convert import CheckpointError, check_finite, load_state_dict_strict
from ..backbone.torchscript import TorchScriptReadError, is_torchscript_archive, read_torchscript_state_dict
from ..backbone.weights_file import (
    ZIP_ERRORS,
    allocation_budget,
    check_torch_zip,
    check_weights_file,
    describe_load_error,
    load_weights_only,
    read_safetensors,
    read_safetensors_header,
)
from ..fileio import atomic_write, file_kind
from .base import FORMAT_NAME, MODEL_KIND_KEY, TRAINING_DATA_KEY, SavedModel, scorer_metadata

log = logging.getLogger(__name__)

# What every training checkpoint holds (engine/checkpointing.py writes more).
TRAINING_CHECKPOINT_KEYS = ("model", "optimizer", "step")
# What a training checkpoint records about its model (engine/trainer.py, model_record).
RECORD_KEYS = ("system", "model_kind", "model_config")


# -- telling files apart ------------------------------------------------------------------
def is_training_checkpoint(obj: Any) -> bool:
    """A ``last.pt`` / ``best.pt`` written by the trainer (weights plus optimizer state)."""
    return isinstance(obj, Mapping) and all(key in obj for key in TRAINING_CHECKPOINT_KEYS)


def training_checkpoint_message(path: Path) -> str:
    model_file = path.parent / "best.safetensors"
    instead = (f"pass {model_file}, the model written next to it" if model_file.is_file() else
               "pass the best.safetensors written in the same run directory")  # fmt: skip
    return (f"{path} is a training checkpoint (weights + optimizer state for resume=..., init_from=...), "
            f"not a model file; {instead}")


def read_weights_only(path: str | Path) -> Any:
    """The object a PyTorch file holds, read without running code: a TorchScript archive's
    tensors as data, anything else through the bounded weights-only unpickler."""
    path = Path(path)
    check_weights_file(path)
    if is_torchscript_archive(path):
        check_torch_zip(path, compressed_text=True)
        try:
            return read_torchscript_state_dict(path)
        except (TorchScriptReadError, RecursionError, *ZIP_ERRORS) as error:
            raise CheckpointError(f"cannot read the TorchScript archive {path} as data: {error}") from None
    return load_weights_only(path)


def read_training_record(path: str | Path) -> dict[str, Any] | None:
    """A training checkpoint's entries other than its tensors (``step``, ``config``, the model
    record, ``training_data``), memory-mapped so a large file's tensors are not read; None
    when ``path`` is not a training checkpoint."""
    path = Path(path)
    check_weights_file(path)
    if file_kind(path) != "torch" or not zipfile.is_zipfile(path) or is_torchscript_archive(path):
        return None
    check_torch_zip(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - torch.load's errors for a bad file are of many types
        raise CheckpointError(f"cannot read {path}: {describe_load_error(error)}") from None
    if not is_training_checkpoint(state):
        return None
    return {k: v for k, v in state.items() if k not in ("model", "optimizer", "scheduler", "scaler", "ema", "rng")}


# -- our format -----------------------------------------------------------------------------
def save_model_file(model: SavedModel, path: str | Path) -> Path:
    """``model``'s weights (tied copies left out) and ``scorer_metadata`` as one ``.safetensors`` file (atomic)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in model.tied_keys}
    metadata = scorer_metadata(model)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def model_class(system: str, kind: str, source: str | Path) -> type[SavedModel]:
    """The registered class a file's ``(system, model kind)`` names; a one-line error otherwise."""
    from .registry import entries, get_model_entry

    try:
        get_model_entry(system)  # imports the system's package, which defines its classes
    except KeyError:
        names = ", ".join(entry.name for entry in entries())
        raise CheckpointError(f"{source} holds a {system!r:.40} model, which is not registered here "
                              f"(registered: {names})") from None  # fmt: skip
    cls = SavedModel._classes.get((system, kind))
    if cls is None:
        known = sorted(k for s, k in SavedModel._classes if s == system)
        raise CheckpointError(f"{source} holds a {system} {kind!r:.40}, which that system does not define "
                              f"(it defines: {', '.join(known)})")  # fmt: skip
    return cls


def load_model_file(path: str | Path, metadata: Mapping[str, str] | None = None) -> SavedModel:
    """One of our ``.safetensors`` files -> its model, built from the config in its metadata
    (checked before building) and loaded strictly, in eval mode on the CPU."""
    path = Path(path)
    header_metadata, shapes = read_safetensors_header(path)
    metadata = header_metadata if metadata is None else metadata
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not one of this package's models (no config metadata)")
    system = metadata.get("system", "mtpg")  # our files from before the system was recorded are MTPG's
    cls = model_class(system, metadata.get(MODEL_KIND_KEY, "scorer"), path)
    config = parse_config(metadata["config"], path)
    model = build_checked(cls, config, {k: shape for k, (_dtype, shape) in shapes.items()}, path)
    load_into(model, read_safetensors(path), path)
    return model.eval()


def parse_config(text: str, source: str | Path) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{source}: the model config in its metadata is not JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: the model config in its metadata is not a JSON object")
    return config


def build_checked(cls: type[SavedModel], config: dict[str, Any], shapes: Mapping[str, Sequence[int]],
                  source: str | Path) -> SavedModel:  # fmt: skip
    """``cls.from_config(config)`` once the config is known to fit the file: no integer in it
    larger than the file's element count, the model built first on the meta device (no
    memory), its tensor names and shapes equal to the file's and its size within the file's
    budget; then built for real."""
    if cls.config_type is not None:
        check_config(cls.config_type, config, source)
    elements = sum(_numel(shape) for shape in shapes.values())
    _check_integers(config, max(elements, 1), source)
    with torch.device("meta"):
        try:
            skeleton = cls.from_config(config)
        # a config the class or torch refuses (a negative or zero size): the file's fault; on
        # the meta device nothing else runs that could fail this way
        except (TypeError, ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{source}: its model config cannot build a {cls.__name__}: {error}"[:400]) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items() if k not in cls.tied_keys}
    found = {k: tuple(v) for k, v in shapes.items()}
    if expected != found:
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise CheckpointError(f"{source}: its config does not match its tensors (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, wrong shape {wrong[:3]}); the file is corrupted or was edited")  # fmt: skip
    nbytes = sum(t.numel() * t.element_size() for t in [*skeleton.parameters(), *skeleton.buffers()])
    budget = allocation_budget(source) if Path(source).is_file() else nbytes
    if nbytes > budget:
        raise CheckpointError(f"{source}: its model would take {nbytes} bytes, more than the file's budget of {budget}")
    return cls.from_config(config)


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _check_integers(value: Any, limit: int, source: str | Path, key: str = "config") -> None:
    """Every integer of a config read from a file sizes something the file's tensors hold,
    so none may be negative or exceed their element count (``bins=3e8`` in a small file is refused here,
    before a Python list or a tensor of that size is made)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not 0 <= value <= limit:
        raise CheckpointError(f"{source}: {key}={value} in its metadata is outside 0..{limit}, the sizes its "
                              "tensor elements could need")  # fmt: skip
    if isinstance(value, dict):
        for name, item in value.items():
            _check_integers(item, limit, source, f"{key}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_integers(item, limit, source, f"{key}[{index}]")


def load_into(model: SavedModel, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """``state`` into ``model`` strictly (floats as fp32; tied keys may be absent)."""
    check_finite(state, source)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    own = model.state_dict()
    for key in model.tied_keys:  # written once under the key they are tied to
        if key not in floats and key in own:
            floats[key] = own[key]
    load_state_dict_strict(model, floats, str(source))
    for key in model.tied_keys:  # re-tie: loading copied into the shared tensor already
        if key in state and not torch.equal(state[key].float(), own[key]):
            raise CheckpointError(f"{source}: {key!r} differs from the tensor it is tied to")


def check_config(config_type: type, values: Any, source: str | Path, key: str = "config") -> dict[str, Any]:
    """``values`` checked against the dataclass ``config_type``: a JSON object whose keys are
    its fields and whose values have the fields' types; a one-line ``CheckpointError``
    naming the key otherwise. Returns the values (unchanged)."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{source}: {key} is not an object")
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CheckpointError(f"{source}: unknown key(s) {unknown[:5]} in {key} ({config_type.__name__} has "
                              f"{', '.join(fields)})")  # fmt: skip
    hints = typing.get_type_hints(config_type)
    for name, value in values.items():
        if not _has_type(value, hints[name]):
            raise CheckpointError(f"{source}: {key}.{name}={value!r:.60} is not a {_type_name(hints[name])}")
    return values


def _has_type(value: Any, hint: Any) -> bool:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_has_type(value, argument) for argument in arguments)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if origin in (tuple, list, Sequence, typing.Sequence) or hint in (tuple, list):
        item = arguments[0] if arguments else Any
        return isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value)
    return False  # a field type this checker does not know: refuse rather than guess


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# -- training checkpoints -------------------------------------------------------------------
def model_record(model: nn.Module) -> dict[str, Any]:
    """What a training checkpoint records about its model so ``load_model`` rebuilds it:
    ``system``, ``model_kind`` and ``model_config`` (``SavedModel.config_dict``); empty for
    models that are not ``SavedModel``s."""
    if not isinstance(model, SavedModel) or not model.system:
        return {}
    return {"system": model.system, "model_kind": model.model_kind, "model_config": model.config_dict()}


def build_recorded_model(state: Mapping[str, Any], path: str | Path) -> SavedModel:
    """The model a training checkpoint records (``model_record``), with its raw ``model``
    weights loaded strictly; built through the registered class of the recorded system,
    never from a ``_target_`` or the run config's paths."""
    path = Path(path)
    system, kind, config = (state.get(key) for key in RECORD_KEYS)
    if system is None and kind is None and config is None:
        system, kind, config = _legacy_mtpg_record(state.get("config"), path)
    if not isinstance(system, str) or not isinstance(kind, str) or not isinstance(config, dict):
        raise CheckpointError(f"{path} is a training checkpoint without a model record (system, model kind, config): "
                              "written before checkpoints recorded them, or not by a SavedModel; score the run's "
                              "best.safetensors instead")  # fmt: skip
    weights = state.get("model")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict of tensors")
    cls = model_class(system, kind, path)
    shapes = {k: tuple(v.shape) for k, v in weights.items() if k not in cls.tied_keys}
    model = build_checked(cls, config, shapes, path)
    load_into(model, weights, path)
    model.weights_kind = f"{system} training checkpoint ({kind}, raw weights, step {state.get('step')})"
    model.training_data = state.get(TRAINING_DATA_KEY) or None
    return model.eval()


def _legacy_mtpg_record(run_config: Any, path: Path) -> tuple[Any, Any, Any]:
    """The model record of a ``last.pt`` written before records existed, when a registered
    class recognises its run config (``SavedModel.config_from_run_config``: MTPG-AIAA's
    model group, compared as data, never imported or instantiated); ``(None, None, None)``
    otherwise."""
    from .registry import entries

    entries()  # every system's classes defined
    run_config = run_config if isinstance(run_config, Mapping) else {}
    for (system, kind), cls in sorted(SavedModel._classes.items()):
        config = cls.config_from_run_config(run_config, path)
        if config is not None:
            return system, kind, config
    return None, None, None


# -- init_from ------------------------------------------------------------------------------
def init_source(source: str | Path) -> Path:
    """The file ``init_from`` means: a run dir's ``best.safetensors`` (else its ``best.pt``, the
    validated state of a model that writes no ``.safetensors``, such as AesNet pretraining; else
    ``last.pt``), or itself."""
    source = Path(source)
    if source.is_dir():
        candidates = (source / "best.safetensors", source / "best.pt", source / "last.pt")
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CheckpointError(f"init_from={source}: no best.safetensors, best.pt or last.pt inside")
        source = found
    if not source.is_file():
        raise CheckpointError(f"init_from={source} not found")
    return source


def read_init_state(source: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a run dir (its ``best.safetensors``, else ``last.pt``), a training
    ``.pt``, one of our ``.safetensors`` or any file ``load_model`` reads."""
    from .loading import load_model  # loading.py imports this module

    source = init_source(source)
    if file_kind(source) == "torch" and not is_torchscript_archive(source):
        state = read_weights_only(source)
        if is_training_checkpoint(state):
            check_finite(state["model"], source)
            return dict(state["model"])
    return load_model(source).state_dict()


def load_matching_weights(model: nn.Module, source: str | Path) -> None:
    """Copy every tensor of ``source`` whose name and shape match ``model`` (an AesNet encoder
    file: the image tower, ``start_image_tower_from_aesnet``). Guards: at least one tensor matches, and each part ``model.init_from_whole``
    names (the backbone; AesNet's frozen reference encoder too) loads whole or not at all: a few
    tensors that fit by chance (the unused scalar ``backbone.logit_scale`` fits every
    architecture) must not pass for a loaded backbone."""
    if start_image_tower_from_aesnet(model, source):
        return
    incoming = read_init_state(source)
    own = model.state_dict()
    matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"init_from={source}: no tensor matches {type(model).__name__}'s names and shapes")
    for prefix in getattr(model, "init_from_whole", SavedModel.init_from_whole):
        part = [k for k in own if k.startswith(prefix)]
        unmatched = [k for k in part if k not in matched]
        if unmatched:
            name = prefix.rstrip(".")
            raise CheckpointError(
                f"init_from={source}: the {name} does not match this model's architecture "
                f"({len(part) - len(unmatched)} of {len(part)} {name} tensors fit; not {unmatched[0]})"
            )
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(own) - set(matched))
    log.info("init_from %s: loaded %d tensors; %d left at initialisation (%s%s)", source, len(matched),
             len(skipped), ", ".join(skipped[:5]), "..." if len(skipped) > 5 else "")  # fmt: skip


def start_image_tower_from_aesnet(model: SavedModel, source: str | Path) -> bool:
    """``init_from`` an AesNet encoder into another system's model: its image tower, all or
    nothing (``backbone/transfer.py``; one line naming both architectures when they differ).
    False when ``source`` is not an AesNet encoder or ``model`` is AesNet's own (names match)."""
    from ..backbone.transfer import MODEL_PREFIX, is_aesnet_encoder_file

    source = init_source(source)
    if not is_aesnet_encoder_file(source) or any(k.startswith(MODEL_PREFIX) for k in model.state_dict()):
        return False
    model.load_image_tower(source)
    log.info("init_from %s: image tower from the AesNet encoder; the rest of the model as built", source)
    return True
