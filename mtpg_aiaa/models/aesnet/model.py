"""AesNet's two models: the pretraining model (image encoder + attribute heads, trained
against frozen description features) and the downstream scorer (image encoder + a score
or distribution head).

Both name the image encoder ``backbone`` so the optimiser's backbone / head learning
rates (``engine.optim.parameter_groups``) apply unchanged.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision import transforms as T

from ..base import SavedModel, Scorer, ScoreRange
from ...backbone.freezing import check_policy
from .encoders import ImageEncoder, check_encoder_name
from .heads import AttributeHeads

# The attributes of the paper's motivation figure (docs/aesnet.md); the set is configurable.
ATTRIBUTES = ("content", "emotion", "composition", "depth_of_field", "lighting", "color", "technical_quality")
CONTENT_ATTRIBUTE = "content"
# CLIP's initial temperature 0.07.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)


def attribute_prompt(attribute: str) -> str:
    """The text whose frozen feature stands for an attribute in the integration (ours)."""
    return f"the {attribute.replace('_', ' ')} of the image"


@dataclass
class AesNetConfig:
    """Everything that rebuilds a pretraining model (weights aside)."""

    encoder: str = "timm:resnet50"
    image_size: int | None = None
    attributes: tuple[str, ...] = ATTRIBUTES
    embed_dim: int = 256
    hidden_dim: int = 512
    integration: str = "film"
    per_attribute_temperature: bool = True
    reference: bool = False  # keep a frozen copy of the initial encoder (the preserve reading)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class AesNetPretrainModel(SavedModel):
    """Image encoder + attribute heads + learnable temperatures (+ a frozen reference encoder).

    Saved as ``model=pretrain`` of system ``aesnet``; ``embed(images)`` gives its attribute
    embeddings.

    Args:
        config: the architecture.
        attribute_embeddings: ``[A, E]`` frozen text features of ``attribute_prompt(a)``.
        encoder_weights: a local file for the image encoder (timm / open_clip layout).
    """

    def __init__(self, config: AesNetConfig, attribute_embeddings: torch.Tensor, encoder_weights: str | None = None):
        super().__init__()
        self.aesnet_config = config  # not `config`: the trainer writes MTPG files for models with one
        self.attributes = tuple(config.attributes)
        self.backbone = ImageEncoder(config.encoder, config.image_size, encoder_weights)
        self.heads = AttributeHeads(self.attributes, attribute_embeddings, self.backbone.num_features,
                                    config.embed_dim, config.hidden_dim, config.integration)  # fmt: skip
        names = self.attributes if config.per_attribute_temperature else ("shared",)
        self.logit_scales = nn.ParameterDict({n: nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE)) for n in names})
        # The general-domain encoder the preserve reading compares with: the starting
        # weights (ImageNet / CLIP in real runs), frozen.
        self.reference = copy.deepcopy(self.backbone).requires_grad_(False).eval() if config.reference else None
        # init_from (engine/builders.py) must fill these whole: a reference left at random
        # initialisation would make the preserve loss pull towards noise.
        self.init_from_whole = ("backbone.", "reference.") if config.reference else ("backbone.",)

    def set_freeze(self, policy: str, last_n: int = 0) -> None:
        """``model.freeze`` (``backbone/freezing.py``): pretraining trains its encoder (``full`` only)."""
        check_policy(policy, ("full",), "AesNet pretraining")

    system = "aesnet"
    model_kind = "pretrain"

    def config_dict(self) -> dict[str, Any]:
        text_dim = int(self.heads.attribute_embeddings.shape[1])
        return asdict(self.aesnet_config) | {"attributes": list(self.attributes), "text_dim": text_dim}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AesNetPretrainModel":
        """A pretraining model of a saved config; the attribute embeddings (a buffer) and every
        weight come from the file. The encoder is a library's architecture name, never a hub
        or a folder (``check_encoder_name``)."""
        from ..checkpoints import check_config

        values = dict(config)
        text_dim = values.pop("text_dim", None)
        if type(text_dim) is not int or text_dim <= 0:
            raise ValueError(f"text_dim={text_dim!r} is not a positive integer")
        check_config(AesNetConfig, values, "its metadata")
        check_encoder_name(values.get("encoder", AesNetConfig.encoder))
        settings = AesNetConfig(**{**values, "attributes": tuple(values.get("attributes", ATTRIBUTES))})
        return cls(settings, torch.zeros(len(settings.attributes), text_dim))

    def embed(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images [B, 3, H, W]`` -> ``{attribute: [B, D]}`` l2-normalised attribute embeddings."""
        return self.heads.embed_images(self.backbone(images))

    def build_transform(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        """PIL -> ``[3, S, S]`` for ``embed`` (the encoder's own size and statistics)."""
        return build_image_transform(self.backbone, train)

    def train(self, mode: bool = True) -> "AesNetPretrainModel":
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()
        return self

    def logit_scale(self, attribute: str) -> torch.Tensor:
        return self.logit_scales[attribute if self.aesnet_config.per_attribute_temperature else "shared"]

    def forward(self, images: torch.Tensor, text: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``images [B, 3, H, W]``, ``text {attribute: [B, E]}`` frozen description features ->
        ``backbone [B, C]``, ``image {a: [B, D]}``, ``text {a: [B, D]}``, and
        ``reference [B, C]`` when the model keeps a reference encoder."""
        features = self.backbone(images)
        out = {"backbone": features, "image": self.heads.embed_images(features),
               "text": self.heads.embed_texts({a: text[a] for a in self.attributes if a in text})}  # fmt: skip
        if self.reference is not None:
            with torch.no_grad():
                out["reference"] = self.reference(images)
        return out


# -- downstream ------------------------------------------------------------------------
@dataclass
class AesNetScorerConfig:
    encoder: str = "timm:resnet50"
    image_size: int | None = None
    head: str = "regression"  # regression: one score | distribution: K bins, score = expectation
    bins: int = 10
    score_low: float = 0.0
    score_high: float = 1.0
    frozen_backbone: bool = False  # the linear probe: backbone frozen and in eval mode (BatchNorm statistics fixed)


class AesNetScorer(Scorer):
    """A (pretrained) image encoder with a linear head: the finetune / probe model.

    ``forward({"image": [B, 3, H, W]})`` -> ``score [B]`` on ``[score_low, score_high]`` for
    ``head="regression"`` (a sigmoid keeps it in range), or ``distribution [B, K]`` over
    ``K`` evenly spaced values and ``score`` its expectation for ``head="distribution"``
    (AVA's 10 vote bins).
    """

    system = "aesnet"
    config_type = AesNetScorerConfig

    def __init__(self, config: AesNetScorerConfig, encoder_weights: str | None = None):
        super().__init__()
        if config.head not in ("regression", "distribution"):
            raise ValueError(f"head must be regression or distribution, got {config.head!r}")
        self.scorer_config = config  # not `config`: the trainer writes MTPG files for models with one
        self.backbone = ImageEncoder(config.encoder, config.image_size, encoder_weights)
        outputs = 1 if config.head == "regression" else config.bins
        self.head = nn.Linear(self.backbone.num_features, outputs)
        self.score_range = ScoreRange(config.score_low, config.score_high)
        if config.head == "distribution":
            step = (config.score_high - config.score_low) / (config.bins - 1)
            self.distribution_values = [config.score_low + i * step for i in range(config.bins)]
            self.register_buffer("bin_values", torch.tensor(self.distribution_values), persistent=False)
        if config.frozen_backbone:
            self.backbone.requires_grad_(False)

    def set_freeze(self, policy: str, last_n: int = 0) -> None:
        """``model.freeze`` (``backbone/freezing.py``): the encoder ``frozen`` (the linear probe:
        no gradient, eval mode, recorded as ``frozen_backbone``) or ``full`` (finetuning)."""
        check_policy(policy, ("frozen", "full"), "an AesNet scorer")
        frozen = policy == "frozen"
        if frozen or self.scorer_config.frozen_backbone:  # a fresh encoder's own requires_grad stays as built
            self.backbone.requires_grad_(not frozen)
        self.scorer_config.frozen_backbone = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> "AesNetScorer":
        super().train(mode)
        if self.scorer_config.frozen_backbone:
            self.backbone.eval()
        return self

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.scorer_config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AesNetScorer":
        """A scorer of a saved config, its encoder a library's architecture name (never a hub
        or a folder: ``check_encoder_name``); every weight comes from the file."""
        check_encoder_name(config.get("encoder", AesNetScorerConfig.encoder))
        return cls(AesNetScorerConfig(**config))

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    def build_transform(self, train: bool = False, preprocess: str | None = None) -> Callable[[Any], torch.Tensor]:
        if preprocess not in (None, "official"):
            raise ValueError(f"AesNet has one preprocessing (its encoder's); preprocess={preprocess!r}")
        return build_image_transform(self.backbone, train)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.head(self.backbone(batch["image"]))
        if self.scorer_config.head == "regression":
            low, high = self.score_range.low, self.score_range.high
            return {"score": low + (high - low) * torch.sigmoid(logits[:, 0])}
        distribution = logits.softmax(dim=-1)
        return {"distribution": distribution, "score": distribution @ self.bin_values, "logits": logits}



def build_image_transform(encoder: ImageEncoder, train: bool = False) -> Callable[[Any], torch.Tensor]:
    """PIL -> ``[3, S, S]``: resize the short side, centre crop, a horizontal flip when
    training (no random crop: cropping changes composition, one of the attributes),
    normalise with the encoder's own mean and std."""
    size = encoder.image_size
    steps = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    if train:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(encoder.mean, encoder.std)])


def scorer_from_pretrained(pretrained: AesNetPretrainModel, config: AesNetScorerConfig) -> AesNetScorer:
    """A scorer whose encoder starts from a pretraining model's (same architecture)."""
    scorer = AesNetScorer(config)
    scorer.backbone.load_state_dict(pretrained.backbone.state_dict())
    return scorer

