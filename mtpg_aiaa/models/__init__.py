"""Aesthetics systems as siblings: ``mtpg/``, ``cgiaa/``, ``aesnet/``, one registry, one interface."""
from .base import Scorer, ScoreRange
from .registry import ModelEntry, create_model, get_model_entry, list_models, register_model

__all__ = ["ModelEntry", "ScoreRange", "Scorer", "create_model", "get_model_entry", "list_models", "register_model"]
