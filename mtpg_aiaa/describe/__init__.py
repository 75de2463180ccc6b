"""Art descriptions for MTPG-AIAA's second prompt level: GalleryGPT (or another captioner)
run resumably and reproducibly over a dataset. See docs/descriptions.md.

Importing this package does not import ``transformers``; loading a describer does.
"""
from mtpg_aiaa.describe.describer import (
    Describer,
    DescriberSettings,
    Generation,
    load_describer,
    resolve_dtype,
)
from mtpg_aiaa.describe.files import MissingFilesError, check_model_dir
from mtpg_aiaa.describe.inputs import DescribeItem, items_from_folder, items_from_table
from mtpg_aiaa.describe.run import describe_items, summary_path_for
from mtpg_aiaa.describe.sharding import Shard, resolve_shard, shard_positions
from mtpg_aiaa.describe.template import DEFAULT_INSTRUCTION, VICUNA_V1_CHAT_TEMPLATE, vicuna_v1_prompt

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DescribeItem",
    "Describer",
    "DescriberSettings",
    "Generation",
    "MissingFilesError",
    "Shard",
    "VICUNA_V1_CHAT_TEMPLATE",
    "check_model_dir",
    "describe_items",
    "items_from_folder",
    "items_from_table",
    "load_describer",
    "resolve_dtype",
    "resolve_shard",
    "shard_positions",
    "summary_path_for",
    "vicuna_v1_prompt",
]
