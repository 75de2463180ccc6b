"""MAP (multi-attribute prediction): the image feature and the four critiques' text features,
concatenated, then a projection to the score.

The paper fine-tunes CLIP's image and text encoders and the projection while the experts stay
frozen; its scoring model was never released, so the head's details here are ours
(docs/cgiaa.md): a LayerNorm over the 5·D concatenation and one linear layer to a scalar, or
to a 10-bin distribution (AVA-like data, trained with EMD) whose expectation is the score.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from mtpg_aiaa.backbone.clip import load_clip
from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch, get_arch
from mtpg_aiaa.models.base import Scorer, ScoreRange
from mtpg_aiaa.backbone.freezing import POLICIES, apply_freeze_policy, check_policy
from mtpg_aiaa.backbone.tokenizer import get_tokenizer
from mtpg_aiaa.backbone.transfer import load_image_tower
from mtpg_aiaa.transforms import CLIP_MEAN, CLIP_STD

from .generator import ATTRIBUTES
from .prefix import build_release_transform

CLIP_CONTEXT_LENGTH = 77


@dataclass
class CGIAAScorerConfig:
    """``clip``: an architecture name from ``backbone/model_configs`` (77 positions are used) or
    a dict of ``LongCLIPArch`` fields; ``clip_weights``: an OpenAI-layout CLIP file to start from
    (e.g. the released ``base_model.pt``; its architecture replaces ``clip``); ``bins``: 0 for a scalar score, K for a K-bin distribution
    over 1..K; ``score_low/high``: the score range of the data (for a scalar head); ``bounded``: a
    scalar head squashed into ``score_low..score_high`` by a sigmoid (an option for new training;
    the released design and files saved before it are the unbounded linear head)."""

    clip: str | dict = "LongCLIP-B-16"
    clip_weights: str | None = None
    attributes: Sequence[str] = ATTRIBUTES
    bins: int = 0
    score_low: float = 0.0
    score_high: float = 1.0
    freeze_image_encoder: bool = False
    freeze_text_encoder: bool = False
    dropout: float = 0.0
    bounded: bool = False

    def arch(self) -> LongCLIPArch:
        arch = get_arch(self.clip) if isinstance(self.clip, str) else LongCLIPArch(**self.clip)
        return LongCLIPArch(**{**arch.to_dict(), "context_length": CLIP_CONTEXT_LENGTH})


class CGIAAScorer(Scorer):
    """Image + per-attribute critiques -> ``{"score": [B]}`` (+ ``"distribution": [B, K]``)."""

    system = "cgiaa"
    config_type = CGIAAScorerConfig
    init_from_whole = ("clip.",)  # init_from loads CLIP whole or not at all

    def __init__(self, config: CGIAAScorerConfig | None = None, **overrides: Any):
        super().__init__()
        config = config or CGIAAScorerConfig(**overrides)
        self.config = config
        self.text_names = tuple(config.attributes)
        if config.clip_weights:
            self.clip = load_clip(config.clip_weights)
            # the saved scorer rebuilds from its own tensors, not from this file
            config.clip, config.clip_weights = self.clip.arch.to_dict(), None
        else:
            self.clip = LongCLIP(config.arch())
        width = self.clip.embed_dim * (1 + len(self.text_names))
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(width, config.bins or 1)
        if config.bins:
            self.distribution_values = tuple(float(v) for v in range(1, config.bins + 1))
            self.score_is_expected_value = True
            self.score_range = ScoreRange(1.0, float(config.bins))
        else:
            self.score_range = ScoreRange(config.score_low, config.score_high, bounded=config.bounded)
        self._tokenizer = get_tokenizer(CLIP_CONTEXT_LENGTH)
        self.set_frozen(config.freeze_image_encoder, config.freeze_text_encoder)

    def set_frozen(self, image: bool, text: bool) -> None:
        """Freeze CLIP's image tower and/or its text tower (the head always trains)."""
        for name, parameter in self.clip.named_parameters():
            parameter.requires_grad_(not (image if name.startswith("visual.") else text))

    def set_freeze(self, policy: str, last_n: int = 0) -> None:
        """``model.freeze`` (``backbone/freezing.py``): CLIP's towers ``frozen`` (only the head
        trains), their last ``last_n`` blocks trained (``last_n``), or ``full``."""
        check_policy(policy, POLICIES, "a CG-IAA scorer")
        if policy == "last_n":
            apply_freeze_policy(self.clip, policy, last_n)
        else:
            self.set_frozen(policy == "frozen", policy == "frozen")

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config) | {"attributes": list(self.config.attributes)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CGIAAScorer":
        """A scorer of a saved config: the architecture from its numbers (or a registered
        name); a ``clip_weights`` path is refused, since a weights file names no other file."""
        if config.get("clip_weights"):
            raise ValueError("its config names a clip_weights file; a saved model carries its own weights")
        return cls(CGIAAScorerConfig(**config))

    @property
    def image_size(self) -> int:
        return self.clip.arch.image_size

    def load_image_tower(self, source) -> None:
        """CLIP's image tower from an AesNet encoder (``backbone/transfer.py``); the text tower
        and the head are left as they are."""
        load_image_tower(self.clip.visual, source, expected_arch=self.clip.arch, target="CG-IAA's CLIP image tower")

    def build_transform(self, train: bool = False, preprocess: str | None = None) -> Callable:
        if preprocess not in (None, "official"):
            raise ValueError(f"CG-IAA has one preprocessing (the release's); preprocess={preprocess!r}")
        size = self.clip.arch.image_size
        if not train:
            return build_release_transform(size)
        # AesCLIP's training view (same lab): resize the short side, flip, random crop
        return T.Compose([
            T.Resize(round(size * 256 / 224), interpolation=InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
            T.RandomCrop(size), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD),
        ])  # fmt: skip

    def tokenize(self, texts: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """CLIP tokens, cut to 77 (the release errs on longer critiques; we truncate)."""
        missing = [name for name in self.text_names if name not in texts]
        if missing:
            raise KeyError(f"critiques missing for {', '.join(missing)}")
        return {name: self._tokenizer(list(texts[name])) for name in self.text_names}

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        """``[B, (1 + attributes) * D]``: unit-norm image feature then one unit-norm feature per critique."""
        parts = [F.normalize(self.clip.encode_image(batch["image"]), dim=-1)]
        parts += [F.normalize(self.clip.encode_text(batch["tokens"][name]), dim=-1) for name in self.text_names]
        return torch.cat(parts, dim=-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.head(self.dropout(self.norm(self.features(batch))))
        if not self.config.bins:
            if self.config.bounded:
                low, high = self.score_range.low, self.score_range.high
                return {"score": low + (high - low) * torch.sigmoid(out.squeeze(-1))}
            return {"score": out.squeeze(-1)}
        distribution = out.softmax(dim=-1)
        values = torch.tensor(self.distribution_values, device=out.device, dtype=distribution.dtype)
        return {"score": distribution @ values, "distribution": distribution}



def build_cgiaa_scorer(**config: Any) -> CGIAAScorer:
    """A fresh MAP scorer; ``config`` holds ``CGIAAScorerConfig`` fields."""
    return CGIAAScorer(CGIAAScorerConfig(**config))


def load_cgiaa_scorer(path, metadata: dict[str, str], device: str | torch.device = "cpu") -> CGIAAScorer:
    """A scorer saved as ``.safetensors`` with ``scorer_metadata``, loaded strictly, in eval mode."""
    from mtpg_aiaa.models.checkpoints import load_model_file

    return load_model_file(path, metadata).to(device).eval()


def recognizes_cgiaa(keys: set[str], metadata: dict[str, str]) -> bool:
    return metadata.get("system") == CGIAAScorer.system
