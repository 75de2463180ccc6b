"""Aesthetics systems as siblings: ``mtpg/``, ``cgiaa/``, ``aesnet/``, one registry, one interface.

Each system declares itself in ``<system>/system.json`` (``registry.py``). Names are imported
lazily: ``from mtpg_aiaa.models.registry import describe_systems`` loads neither torch nor a system.
"""
from __future__ import annotations

from mtpg_aiaa.lazy import lazy_attributes

_PUBLIC = {
    "Scorer": "mtpg_aiaa.models.base",
    "ScoreRange": "mtpg_aiaa.models.base",
    "ModelEntry": "mtpg_aiaa.models.registry",
    "create_model": "mtpg_aiaa.models.registry",
    "describe_systems": "mtpg_aiaa.models.registry",
    "get_model_entry": "mtpg_aiaa.models.registry",
    "list_models": "mtpg_aiaa.models.registry",
    "register_model": "mtpg_aiaa.models.registry",
}
__all__ = sorted(_PUBLIC)


__getattr__ = lazy_attributes(__name__, _PUBLIC)
