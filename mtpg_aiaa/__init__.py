"""mtpg-aiaa: artistic image aesthetics assessment (MTPG-AIAA, CG-IAA, AesNet).

The package holds models, data, metrics and file formats; the training engine lives
elsewhere and is never imported from here. Top-level names are imported lazily so that
``mtpg_aiaa.eval.metrics`` or ``mtpg_aiaa.data`` load without open_clip.
"""
from __future__ import annotations

from .lazy import lazy_attributes

__version__ = "0.1.0"

# Generic names only: a system's own classes are reached through the registry (create_model,
# load_model) or its package (mtpg_aiaa.models.mtpg), so the root names no system.
_PUBLIC = {
    "create_longclip": "mtpg_aiaa.backbone",
    "create_model": "mtpg_aiaa.models.registry",
    "create_scorer": "mtpg_aiaa.api",
    "describe_systems": "mtpg_aiaa.models.registry",
    "list_backbones": "mtpg_aiaa.backbone",
    "list_models": "mtpg_aiaa.models.registry",
    "load_longclip": "mtpg_aiaa.backbone",
    "load_model": "mtpg_aiaa.models.loading",
    "get_tokenizer": "mtpg_aiaa.backbone.tokenizer",
}
__all__ = sorted(_PUBLIC)


_RENAMED = {"list_backbones": "list_models"}  # the backbone module's own name for it


__getattr__ = lazy_attributes(__name__, _PUBLIC, _RENAMED)
