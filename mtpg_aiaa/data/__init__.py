"""Datasets for artistic image aesthetics: label CSVs, image loading, batching."""

from mtpg_aiaa.data.dataset import (
    BAD_IMAGE_POLICIES,
    AestheticsDataset,
    build_dataset,
    collate_samples,
)
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.data.images import DEFAULT_MAX_PIXELS, load_rgb_image
from mtpg_aiaa.data.named_texts import read_table
from mtpg_aiaa.data.table import TABLE_COLUMNS, read_score_table

__all__ = [
    "AestheticsDataset",
    "BAD_IMAGE_POLICIES",
    "BadInputError",
    "DEFAULT_MAX_PIXELS",
    "TABLE_COLUMNS",
    "build_dataset",
    "collate_samples",
    "load_rgb_image",
    "read_score_table",
    "read_table",
]
