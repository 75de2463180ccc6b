"""The model registry: ``create_model(name, **config)``, ``list_models()``, and which system
a weight file belongs to (by its content, never its suffix).

Each system registers itself in its package's ``__init__`` with ``register_model``; the
registry imports the system packages lazily, on the first look-up.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SYSTEM_PACKAGES = ("mtpg_aiaa.models.mtpg", "mtpg_aiaa.models.cgiaa", "mtpg_aiaa.models.aesnet")


@dataclass(frozen=True)
class ModelEntry:
    """One registered system.

    Attributes:
        name: registry name (``mtpg``, ``cgiaa``, ``aesnet``).
        build: ``build(**config) -> Scorer``, a fresh model.
        load: ``load(path, metadata, **options) -> Scorer`` for a file this system recognises
            (``options`` it does not name, such as MTPG's ``backbone_precision``, are not passed).
        recognizes: ``recognizes(keys, metadata) -> bool`` from the tensor names and the
            safetensors metadata (``{}`` for ``.pt`` files); used by ``load_model``.
        description: one line for ``list_models``.
        weights_help: one line saying where a user gets weights for this system, or that they
            must be trained here first (reports show it when no weights were given).
    """

    name: str
    build: Callable[..., Any]
    load: Callable[..., Any] | None = None
    recognizes: Callable[[set[str], Mapping[str, str]], bool] | None = None
    description: str = ""
    weights_help: str = ""


_REGISTRY: dict[str, ModelEntry] = {}
_loaded = False


def register_model(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY and _REGISTRY[entry.name] != entry:
        raise ValueError(f"model {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def _load_systems() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in SYSTEM_PACKAGES:
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as error:
            if error.name != package:  # a system's own import failed: that is a bug, not an absent system
                raise


def list_models() -> list[str]:
    _load_systems()
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    _load_systems()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def create_model(name: str, **config) -> Any:
    """A fresh (randomly initialised unless the config names weights) model of system ``name``."""
    return get_model_entry(name).build(**config)


def entries() -> list[ModelEntry]:
    _load_systems()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]
