"""Datasets for artistic image aesthetics: label CSVs, image loading, batching.

Names are imported lazily, so that ``mtpg_aiaa.data.errors`` or the dataset catalogue load
without torch (``python -m mtpg_aiaa list`` and ``--help`` stay fast)."""
from __future__ import annotations

from mtpg_aiaa.lazy import lazy_attributes

_PUBLIC = {
    "AestheticsDataset": "mtpg_aiaa.data.dataset",
    "BAD_IMAGE_POLICIES": "mtpg_aiaa.data.dataset",
    "build_dataset": "mtpg_aiaa.data.dataset",
    "collate_samples": "mtpg_aiaa.data.dataset",
    "BadInputError": "mtpg_aiaa.data.errors",
    "DEFAULT_MAX_PIXELS": "mtpg_aiaa.data.images",
    "load_rgb_image": "mtpg_aiaa.data.images",
    "read_table": "mtpg_aiaa.data.named_texts",
    "TABLE_COLUMNS": "mtpg_aiaa.data.table",
    "read_score_table": "mtpg_aiaa.data.table",
}
__all__ = sorted(_PUBLIC)


__getattr__ = lazy_attributes(__name__, _PUBLIC)
