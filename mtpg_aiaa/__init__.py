"""mtpg-aiaa: artistic image aesthetics assessment (MTPG-AIAA, CG-IAA, AesNet).

Importing the package loads models, data and metrics only; the training engine lives
elsewhere and is never imported from here.
"""
from .backbone import create_longclip, list_models, load_longclip
from .checkpoint import load_model, load_official_checkpoint, save_model
from .model import MTPGAIAA, MTPGConfig, build_mtpg
from .tokenizer import get_tokenizer

__version__ = "0.1.0"

__all__ = [
    "MTPGAIAA",
    "MTPGConfig",
    "build_mtpg",
    "create_longclip",
    "get_tokenizer",
    "list_models",
    "load_longclip",
    "load_model",
    "load_official_checkpoint",
    "save_model",
]
