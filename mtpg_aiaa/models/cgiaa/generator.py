"""CG-IAA's critique generator: one CLIP base model and an expert per attribute.

``load_generator(weights_dir, tokenizer)`` reads the released files
(``base_model.pt color.pt composition.pt dof.pt general.pt``) and ``critique(images)`` writes
one critique per attribute per image, as the released ``caption_inference.py`` does (on any
device, batched, with a key/value cache).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from mtpg_aiaa.backbone.clip import load_clip

from .beam import RELEASED_BEAM_SIZE, RELEASED_MAX_STEPS, beam_search, literal_beam_search
from .expert import CritiqueExpert, load_expert
from .prefix import clip_prefix
from .tokenizer import decode_critique, stop_token_id
from .tokenizer_check import check_tokenizer_fits

ATTRIBUTES = ("color", "composition", "dof", "general")
BASE_MODEL_FILE = "base_model.pt"


def attribute_file(attribute: str) -> str:
    return f"{attribute}.pt"


class CritiqueGenerator(nn.Module):
    """Frozen CLIP + ``{attribute: CritiqueExpert}`` + GPT-2 tokenizer."""

    def __init__(
        self,
        clip_model: nn.Module,
        experts: dict[str, CritiqueExpert],
        tokenizer: PreTrainedTokenizerBase,
        clean_up_spaces: bool = False,
    ):
        super().__init__()
        self.clean_up_spaces = clean_up_spaces  # see tokenizer.decode_critique
        self.clip = clip_model
        self.experts = nn.ModuleDict(experts)
        self.tokenizer = tokenizer
        self.stop_token = stop_token_id(tokenizer)
        self.requires_grad_(False)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.experts)

    @torch.no_grad()
    def prefixes(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 224, 224]`` (released preprocessing) -> normalised CLIP features ``[B, D]``."""
        return clip_prefix(self.clip, images)

    @torch.no_grad()
    def critique_prefixes(
        self,
        prefixes: torch.Tensor,
        attributes: Sequence[str] | None = None,
        beam_size: int = RELEASED_BEAM_SIZE,
        max_steps: int = RELEASED_MAX_STEPS,
        literal: bool = False,
        batch_size: int = 16,
    ) -> list[dict[str, str]]:
        """One ``{attribute: critique}`` per prefix row. ``literal`` runs the release's loop
        one prefix at a time (slow; for comparison), otherwise ``batch_size`` prefixes at once."""
        attributes = tuple(attributes or self.attributes)
        out: list[dict[str, str]] = [{} for _ in range(prefixes.shape[0])]
        for attribute in attributes:
            expert = self.experts[attribute]
            for start in range(0, prefixes.shape[0], batch_size):
                embeds = expert.prefix_embeddings(prefixes[start : start + batch_size])
                if literal:
                    results = [literal_beam_search(expert.gpt, row[None], self.stop_token, beam_size, max_steps) for row in embeds]
                else:
                    results = beam_search(expert.gpt, embeds, self.stop_token, beam_size, max_steps)
                for offset, result in enumerate(results):
                    out[start + offset][attribute] = decode_critique(self.tokenizer, result.best, self.clean_up_spaces)
        return out

    def critique(self, images: torch.Tensor, **options) -> list[dict[str, str]]:
        """``[B, 3, 224, 224]`` -> ``B`` dicts ``{attribute: critique}`` (see ``critique_prefixes``)."""
        return self.critique_prefixes(self.prefixes(images), **options)


def load_generator(
    weights_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    attributes: Sequence[str] = ATTRIBUTES,
    device: str | torch.device = "cpu",
) -> CritiqueGenerator:
    """Read ``base_model.pt`` and one ``<attribute>.pt`` per attribute from ``weights_dir``."""
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise FileNotFoundError(f"weights folder not found: {weights_dir}")
    clip_model = load_clip(weights_dir / BASE_MODEL_FILE)
    experts = {name: load_expert(weights_dir / attribute_file(name)) for name in attributes}
    check_tokenizer_fits(tokenizer, experts, getattr(tokenizer, "name_or_path", "") or "given", str(weights_dir))
    return CritiqueGenerator(clip_model, experts, tokenizer).to(device).eval()
