"""MTPG-AIAA: Long-CLIP features of a painting and its description, fused, then matched
against five aesthetic-level prompts; the score is the expected level (0-1).

This module holds the model only (no training engine, no file formats).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...backbone.freezing import apply_freeze_policy
from ...backbone.longclip import LongCLIP, LongCLIPArch, encode_text_by_length, get_arch, trim_text_tokens
from .fusion.official import OfficialFusion, init_logit_scale
from .fusion.token import NoFusion, TokenFusion
from .prompt_context import LearnablePromptContext
from .prompts import LEVEL_SCORES, LEVELS, expected_score, level_prompts
from ..base import Scorer, ScoreRange
from ...backbone.tokenizer import get_tokenizer
from ...backbone.transfer import load_image_tower
from ...transforms import build_transform

FUSIONS = ("official", "token", "none")
# The model group's builder before training checkpoints recorded their model (compared as strings).
_LEGACY_BUILDERS = ("mtpg_aiaa.models.mtpg.build_mtpg_model", "mtpg_aiaa.models.mtpg.factory.build_mtpg_model")


@dataclass
class MTPGConfig:
    """Everything needed to rebuild an MTPG-AIAA model (weights excluded).

    Attributes:
        backbone: a registered Long-CLIP name or an architecture dict (``LongCLIPArch``).
        fusion: ``official`` (the released module; outputs depend on the batch),
            ``token`` (ours: per-sample cross-attention over patch and description
            tokens) or ``none`` (image only, the ablation).
        prompts: ``official`` (the literal released strings) or ``clean``.
        preprocess: ``official`` (ImageNet statistics, 224x224 squash) or ``clip``.
        prompt_context: ``0`` for the fixed prompts; ``n > 0`` learns ``n`` context
            vectors in place of the prompts' opening words (CoOp, ours; see
            ``prompt_context.py``).
        prompt_context_per_level: one learned context per level instead of a shared one.
    """

    backbone: str | dict = "LongCLIP-L-14"
    fusion: str = "official"
    prompts: str = "official"
    preprocess: str = "official"
    prompt_context: int = 0
    prompt_context_per_level: bool = False
    extra: dict = field(default_factory=dict)

    def arch(self) -> LongCLIPArch:
        if isinstance(self.backbone, str):
            return get_arch(self.backbone)
        return LongCLIPArch.from_dict(dict(self.backbone))

    def to_dict(self) -> dict:
        values = asdict(self)
        values["backbone"] = self.arch().to_dict()  # architectures travel as numbers, not names
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "MTPGConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class MTPGAIAA(Scorer):
    """The MTPG-AIAA scorer (registered as ``mtpg``; see ``models/base.py`` for the interface).

    Scores lie on 0-1 (the expected aesthetic level); ``distribution`` is the five level
    probabilities, over ``LEVEL_SCORES``.

    Args:
        backbone: a Long-CLIP model.
        config: the model's config (fusion and prompt set are read from it).
        trim_text: skip the padding after each description's EOT (exact; faster).
    """

    system = "mtpg"
    score_range = ScoreRange(0.0, 1.0)
    text_names = ("description",)
    distribution_values = LEVEL_SCORES
    distribution_labels = LEVELS  # prediction tables name the columns prob_<level>
    score_is_expected_value = True
    config_type = MTPGConfig

    def __init__(self, backbone: LongCLIP, config: MTPGConfig, trim_text: bool = True):
        super().__init__()
        if config.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {config.fusion!r}; choose from {FUSIONS}")
        self.config = config
        self.backbone = backbone
        options = dict(config.extra.get("fusion", {}))
        arch = backbone.arch
        if options.pop("layer_statistics", False):  # per vision block and the patch embedding: mean and std of each channel
            options["layer_statistics_dim"] = (arch.vision_layers + 1) * 2 * arch.vision_width
        if options.pop("description_statistics", False):  # per text block and the embedding: mean of each channel
            options["description_statistics_dim"] = (arch.text_layers + 1) * arch.text_width
        self.fusion = build_fusion(config.fusion, backbone.embed_dim, **options)
        self.logit_scale = nn.Parameter(init_logit_scale())
        self.trim_text = trim_text
        self.tokenizer = get_tokenizer(backbone.context_length)
        self.register_buffer("prompt_tokens", self.tokenizer(level_prompts(config.prompts)), persistent=False)
        self.prompt_context = (
            LearnablePromptContext(backbone.token_embedding, self.tokenizer, config.prompt_context,
                                   config.prompt_context_per_level)
            if config.prompt_context else None
        )  # fmt: skip
        self._prompt_cache: tuple[tuple, torch.Tensor] | None = None

    def config_dict(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: dict) -> "MTPGAIAA":
        return build_mtpg(MTPGConfig(**config))

    @classmethod
    def config_from_run_config(cls, run_config: dict, source) -> dict | None:
        """An MTPG run's ``last.pt`` from before checkpoints recorded their model: its
        ``model`` group, when that is MTPG's (the exact builder string, or no target and a
        ``fusion`` key) and no task built its own model."""
        from ...backbone.convert import CheckpointError
        from .factory import mtpg_config

        task = run_config.get("task") if isinstance(run_config.get("task"), dict) else {}
        group = run_config.get("model") if isinstance(run_config.get("model"), dict) else {}
        target = group.get("_target_")
        if task.get("build_model") or task.get("model") or not (
                target in _LEGACY_BUILDERS or (target is None and "fusion" in group)):  # fmt: skip
            return None
        keys = {k: v for k, v in group.items() if not k.startswith("_") and k not in ("backbone_weights", "freeze", "freeze_last_n")}
        try:
            return mtpg_config(**keys).to_dict()
        except (TypeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{source}: its run config's model group does not describe an MTPG-AIAA model: "
                                  f"{error}"[:400]) from None  # fmt: skip

    @property
    def image_size(self) -> int:
        return self.backbone.arch.image_size

    @property
    def preprocess(self) -> str:
        return self.config.preprocess

    @property
    def prompt_set(self) -> str:
        return self.config.prompts

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many descriptions are longer than Long-CLIP's 248 tokens (cut when tokenized)."""
        return sum(self.tokenizer.is_truncated(text) for text in texts)

    def set_prompts(self, prompt_set: str) -> None:
        """Switch the level prompt strings (``official`` or ``clean``); features are recomputed."""
        if self.prompt_context is not None:
            raise ValueError("this model learns its prompt context; the fixed prompt strings are not used")
        tokens = self.tokenizer(level_prompts(prompt_set)).to(self.prompt_tokens.device)
        self.prompt_tokens = tokens
        self.config.prompts = prompt_set
        self._prompt_cache = None

    def set_freeze(self, policy: str, last_n: int = 0) -> None:
        """``model.freeze`` (``backbone/freezing.py``): the Long-CLIP backbone frozen, its last
        ``last_n`` blocks of each tower trained, or all of it trained; fusion and prompts always train."""
        apply_freeze_policy(self.backbone, policy, last_n)

    # -- the scorer interface ----------------------------------------------------
    @property
    def outputs_depend_on_batch(self) -> bool:
        """``fusion=official`` mixes the samples of a batch: score images alone for the demo's numbers."""
        return self.config.fusion == "official"

    def build_transform(self, train: bool = False, preprocess: str | None = None):
        """PIL image -> ``[3, S, S]``: the config's preprocessing (or ``preprocess``) at the backbone's size."""
        return build_transform(preprocess or self.config.preprocess, self.backbone.arch.image_size, train=train)

    def tokenize(self, texts: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """``{"description": B strings}`` -> ``{"description": [B, 248]}`` (Long-CLIP tokens)."""
        return {"description": self.tokenizer(list(texts["description"]))}

    def metadata(self) -> dict[str, str]:
        from .checkpoint import FORMAT_VERSION  # the file format belongs to checkpoint.py

        return {"config": json.dumps(self.config.to_dict()), "version": FORMAT_VERSION}

    def describe_outputs(self, outputs: dict[str, torch.Tensor]) -> list[dict[str, dict[str, float]]]:
        """Per sample, the five aesthetic-level probabilities its score is the expectation of."""
        return [{"aesthetic levels": dict(zip(LEVELS, row))} for row in outputs["distribution"].float().cpu().tolist()]

    def load_image_tower(self, source) -> None:
        """The Long-CLIP image tower from an AesNet encoder (``backbone/transfer.py``); the
        text tower, fusion and prompts are left as they are."""
        load_image_tower(self.backbone.visual, source, expected_arch=self.backbone.arch, target="MTPG-AIAA's image tower")

    # -- features ---------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised fp32 image features ``[B, 3, H, W] -> [B, D]``."""
        dtype = self.backbone.visual.conv1.weight.dtype
        return F.normalize(self.backbone.encode_image(images.to(dtype)).float(), dim=-1)

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """l2-normalised fp32 text features ``[N, L] -> [N, D]``.

        With ``trim_text`` padding after the EOTs is skipped (exact): on a CPU rows are
        encoded in groups of similar length, each cut after its own longest EOT
        (``encode_text_by_length``); on a GPU, where many small launches cost more than
        the padding they save, the whole batch is cut after its longest EOT in one call.
        Without ``trim_text``: the full 248 tokens.
        """
        if not self.trim_text:
            features = self.backbone.encode_text(tokens)
        elif tokens.device.type == "cpu":
            features = encode_text_by_length(self.backbone, tokens)
        else:
            features = self.backbone.encode_text(trim_text_tokens(tokens))
        return F.normalize(features.float(), dim=-1)

    def prompt_features(self) -> torch.Tensor:
        """Level prompt features ``[5, D]``, computed once per set of text-tower weights.

        The cache is keyed by the identity and in-place version counter of every text
        parameter, so an optimizer step, ``load_state_dict`` or ``.to()`` invalidates it, and
        by the autocast state of the parameters' device: features computed in a bf16 training
        step are not served to an fp32 validation or test pass, nor the other way round.
        While the text tower trains with gradients on, features are recomputed each call.
        """
        text_params = self._text_parameters()
        if torch.is_grad_enabled() and any(p.requires_grad for p in text_params):
            return self._encode_prompts()
        device_type = text_params[0].device.type
        autocast = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type)
        key = (autocast, *((p.data_ptr(), p._version, p.dtype) for p in text_params))
        if self._prompt_cache is None or self._prompt_cache[0] != key:
            # A normal (not inference-mode) tensor, so a cache filled during evaluation
            # under inference_mode stays usable when training resumes.
            with torch.inference_mode(False), torch.no_grad():
                self._prompt_cache = (key, self._encode_prompts())
        return self._prompt_cache[1]

    def _encode_prompts(self) -> torch.Tensor:
        if self.prompt_context is None:
            return self.encode_texts(self.prompt_tokens)
        embeddings, eot_positions = self.prompt_context.embeddings(self.backbone.token_embedding)
        return F.normalize(self.backbone.encode_text_embeddings(embeddings, eot_positions).float(), dim=-1)

    def _text_parameters(self) -> list[nn.Parameter]:
        b = self.backbone
        context = list(self.prompt_context.parameters()) if self.prompt_context is not None else []
        return [b.token_embedding.weight, b.positional_embedding, b.text_projection,
                *b.transformer.parameters(), *b.ln_final.parameters(), *context]  # fmt: skip

    # -- scoring ----------------------------------------------------------------
    def encode(self, images: torch.Tensor, description_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the fusion reads, in fp32: ``image``/``text`` ``[B, D]`` l2-normalised,
        and for ``fusion=token`` also ``image_tokens [B, N, D]``, ``text_tokens [B, L, D]``
        and ``text_padding [B, L]`` (True after each description's EOT)."""
        return {**self.encode_image_side(images), **self.encode_text_side(description_tokens)}

    def encode_image_side(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The image half of ``encode``: ``image`` (and ``image_tokens`` for ``fusion=token``)."""
        if not self.fusion.needs_tokens:
            return {"image": self.encode_images(images)}
        dtype = self.backbone.visual.conv1.weight.dtype
        if "image_layer_statistics" in self.statistics_keys():
            image, image_tokens, statistics = self.backbone.encode_image_with_layer_statistics(images.to(dtype))
            return {"image": F.normalize(image.float(), dim=-1), "image_tokens": image_tokens.float(),
                    "image_layer_statistics": statistics.flatten(1).float()}  # fmt: skip
        image, image_tokens = self.backbone.encode_image_with_tokens(images.to(dtype))
        return {"image": F.normalize(image.float(), dim=-1), "image_tokens": image_tokens.float()}

    def encode_text_side(self, description_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The description half of ``encode``: ``text`` (and ``text_tokens``, ``text_padding``
        for ``fusion=token``); nothing for the image-only ablation. Encoding it once and
        repeating it lets several views of one painting share a description pass."""
        if not getattr(self.fusion, "uses_text", True):
            return {}
        if not self.fusion.needs_tokens:
            return {"text": self.encode_texts(description_tokens)}
        if self.trim_text:
            description_tokens = trim_text_tokens(description_tokens)
        positions = torch.arange(description_tokens.shape[1], device=description_tokens.device)
        padding = positions[None, :] > description_tokens.argmax(dim=-1, keepdim=True)
        if "text_layer_statistics" in self.statistics_keys():
            text, text_tokens, statistics = self.backbone.encode_text_with_layer_statistics(description_tokens)
            return {"text": F.normalize(text.float(), dim=-1), "text_tokens": text_tokens.float(), "text_padding": padding,
                    "text_layer_statistics": statistics.flatten(1).float()}  # fmt: skip
        text, text_tokens = self.backbone.encode_text_with_tokens(description_tokens)
        return {"text": F.normalize(text.float(), dim=-1), "text_tokens": text_tokens.float(), "text_padding": padding}

    def statistics_keys(self) -> tuple[str, ...]:
        """The multi-level statistics the fusion reads (``encode`` output keys); often none."""
        statistics = getattr(self.fusion, "statistics", None)
        return tuple(statistics.keys()) if statistics is not None else ()

    def fuse(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The aesthetic feature ``[B, D]`` from ``encode``'s output."""
        if isinstance(self.fusion, TokenFusion):
            statistics = {key: features[key] for key in self.statistics_keys() if key in features}
            return self.fusion(features["image"], features["text"], features["image_tokens"],
                               features["text_tokens"], features["text_padding"], statistics)  # fmt: skip
        return self.fusion(features["image"], features.get("text"))

    def score_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fuse precomputed features (``encode``'s output) and score them against the level prompts."""
        fused = self.fuse(features)
        logits = self.logit_scale.exp() * fused @ self.prompt_features().T
        probs = logits.softmax(dim=-1)
        return {"logits": logits, "probs": probs, "score": expected_score(probs), "fused": fused,
                "distribution": probs}  # fmt: skip

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Score a batch (the scorer interface): ``image [B, 3, H, W]`` and
        ``tokens["description"] [B, L]`` (or ``description_tokens``); see ``score_tensors``."""
        tokens = batch.get("tokens") or {}
        description_tokens = tokens["description"] if "description" in tokens else batch["description_tokens"]
        return self.score_tensors(batch["image"], description_tokens)

    def score_tensors(self, images: torch.Tensor, description_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score ``images [B, 3, H, W]`` (preprocessed) with ``description_tokens [B, L]`` (``L <= 248``).

        Returns:
            ``logits [B, 5]``, ``probs [B, 5]`` (also as ``distribution``), ``score [B]`` on
            0-1 and the fused feature ``fused [B, D]``. With ``fusion=official`` every output
            depends on the whole batch; with ``token`` and ``none`` each sample's only on itself.
        """
        return self.score_features(self.encode(images, description_tokens))

    def score_in_groups(self, images: torch.Tensor, description_tokens: torch.Tensor,
                        group_size: int = 16) -> dict[str, torch.Tensor]:  # fmt: skip
        """``forward`` over consecutive groups of ``group_size`` rows, with the backbone at full width.

        The released fusion mixes the samples of a batch, so the authors' figures are those
        of batch-16 forward passes. The backbone's features of a row do not depend on the
        other rows, so the images and descriptions of a wide batch ``[B, ...]`` are encoded
        in one pass and the fusion and scoring then run on each consecutive group of
        ``group_size`` rows (the last one shorter, as the authors' last batch): the same
        outputs as ``forward`` on each group (up to the rounding of wider matmuls), with
        the GPU busy. Batch-independent fusions are scored in one call.
        """
        features = self.encode(images, description_tokens)
        if not self.outputs_depend_on_batch:
            return self.score_features(features)
        groups = [self.score_features({key: value[start:start + group_size] for key, value in features.items()})
                  for start in range(0, images.shape[0], group_size)]  # fmt: skip
        return {key: torch.cat([group[key] for group in groups]) for key in groups[0]}


def build_fusion(name: str, embed_dim: int, **options) -> nn.Module:
    """The fusion module called ``name`` (see ``FUSIONS``)."""
    if name == "official":
        return OfficialFusion(embed_dim)
    if name == "token":
        return TokenFusion(embed_dim, **options)
    if name == "none":
        return NoFusion()
    raise ValueError(f"unknown fusion {name!r}; choose from {FUSIONS}")


def build_mtpg(config: MTPGConfig, backbone: LongCLIP | None = None, trim_text: bool = True) -> MTPGAIAA:
    """An MTPG-AIAA model from its config; a fresh randomly initialised backbone unless given."""
    return MTPGAIAA(backbone if backbone is not None else LongCLIP(config.arch()), config, trim_text)
