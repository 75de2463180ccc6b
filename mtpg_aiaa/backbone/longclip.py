"""Long-CLIP: OpenAI CLIP with a 248-token text context, built on open_clip's CLIP classes.

Architectures are data: one JSON per model in ``model_configs/`` (as open_clip does).
Weights are loaded separately (``mtpg_aiaa.backbone.convert.load_longclip``).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch import nn

from .attention import FusedAttentionBlock, set_attention, use_fused_attention_blocks

CONFIG_DIR = Path(__file__).with_name("model_configs")
LONGCLIP_CONTEXT_LENGTH = 248
# Long-CLIP keeps CLIP's first 20 positions as trained and learns the rest anew.
KEPT_POSITIONS = 20


@dataclass(frozen=True)
class LongCLIPArch:
    """The numbers that define a Long-CLIP (or CLIP ViT) architecture.

    Every transformer uses ``heads = width // 64`` (as OpenAI CLIP does), so the
    architecture can be read back from a state dict's tensor shapes alone.
    """

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    context_length: int = LONGCLIP_CONTEXT_LENGTH
    vocab_size: int = 49408

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LongCLIPArch":
        return cls(**values)

    @classmethod
    def from_json_config(cls, config: dict) -> "LongCLIPArch":
        vision, text = config["vision_cfg"], config["text_cfg"]
        return cls(
            embed_dim=config["embed_dim"],
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            vision_width=vision["width"],
            vision_layers=vision["layers"],
            text_width=text["width"],
            text_layers=text["layers"],
            context_length=text.get("context_length", LONGCLIP_CONTEXT_LENGTH),
            vocab_size=text.get("vocab_size", 49408),
        )


class LayerNormFp32(nn.LayerNorm):
    """A LayerNorm that computes in fp32 and returns the input's dtype, as the authors'
    CLIP code does (open_clip's ``LayerNormFp32``).

    The fp16-cast backbone (``cast_like_upstream``) keeps LayerNorm weights in fp32 and
    feeds them fp16 activations; CUDA refuses the mixed dtypes, and normalising in fp16
    would lose precision. For fp32 inputs and weights it is the plain LayerNorm, bit for bit.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def use_fp32_layer_norms(model: nn.Module) -> nn.Module:
    """Make every ``nn.LayerNorm`` of ``model`` a ``LayerNormFp32`` in place (same parameters,
    same state-dict keys). open_clip picks its LayerNorm class when the model is built, before
    we know whether it will be cast, so the class is switched afterwards."""
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and not isinstance(module, LayerNormFp32):
            module.__class__ = LayerNormFp32
    return model


@lru_cache(maxsize=None)
def _model_config_files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(CONFIG_DIR.glob("*.json"))}


def list_models() -> list[str]:
    """Names of the registered Long-CLIP architectures (``model_configs/*.json``)."""
    return list(_model_config_files())


def get_arch(name: str) -> LongCLIPArch:
    """The architecture registered under ``name`` (e.g. ``LongCLIP-L-14``)."""
    files = _model_config_files()
    if name not in files:
        raise KeyError(f"Unknown Long-CLIP model {name!r}; registered: {', '.join(files)}")
    return LongCLIPArch.from_json_config(json.loads(files[name].read_text()))


class LongCLIP(CLIP):
    """open_clip's ``CLIP`` with QuickGELU and a text encoder that accepts any length <= 248.

    Because the text mask is causal and the EOT row is pooled, tokens after the last EOT
    cannot change the output; ``encode_text`` therefore accepts token batches already cut
    to their longest sequence (see ``trim_text_tokens``) and slices the positional table
    and mask to match.

    ``attention`` (``auto`` | ``sdpa`` | ``module``, see ``backbone/attention.py``): ``auto``
    runs every block's self-attention as one ``F.scaled_dot_product_attention`` call on CUDA
    (the text tower with ``is_causal=True`` in place of the float mask, so the flash kernel
    can take it) and open_clip's ``MultiheadAttention`` on the CPU (bit for bit the release path).
    """

    def __init__(self, arch: LongCLIPArch, attention: str = "auto"):
        vision_cfg = CLIPVisionCfg(
            layers=arch.vision_layers,
            width=arch.vision_width,
            patch_size=arch.patch_size,
            image_size=arch.image_size,
        )
        text_cfg = CLIPTextCfg(
            context_length=arch.context_length,
            vocab_size=arch.vocab_size,
            width=arch.text_width,
            heads=max(1, arch.text_width // 64),
            layers=arch.text_layers,
        )
        super().__init__(arch.embed_dim, vision_cfg, text_cfg, quick_gelu=True)
        use_fp32_layer_norms(self)
        use_fused_attention_blocks(self.visual.transformer.resblocks, self.transformer.resblocks, attention)
        self.arch = arch

    @property
    def attention(self) -> str:
        """The blocks' attention mode (``auto`` | ``sdpa`` | ``module``)."""
        return next(block.attention_mode for block in self.modules() if isinstance(block, FusedAttentionBlock))

    @attention.setter
    def attention(self, mode: str) -> None:
        set_attention(self, mode)

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features ``[N, embed_dim]`` from token ids ``[N, L]`` with ``L <= 248``."""
        x = self.encode_text_tokens(text)
        pooled = x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)]
        features = pooled @ self.text_projection
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text_with_tokens(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected text features: pooled ``[N, D]`` (as ``encode_text``) and per token ``[N, L, D]``."""
        states = self.encode_text_tokens(text) @ self.text_projection
        return states[torch.arange(states.shape[0], device=states.device), text.argmax(dim=-1)], states

    def encode_image_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected image features: pooled ``[B, D]`` (as ``encode_image``) and patches ``[B, N, D]``.

        Patch tokens go through the same ``ln_post`` and ``proj`` as the class token, so
        both live in the joint embedding space.
        """
        visual = self.visual
        x = visual.ln_post(visual.transformer(visual._embeds(images))) @ visual.proj
        return x[:, 0], x[:, 1:]

    def encode_image_with_layer_statistics(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``encode_image_with_tokens`` plus ``[B, layers + 1, 2, width]``: the per-channel mean
        and standard deviation over the patch tokens of the embedded patches and of every
        block's output (multi-level pooled statistics; the class token is left out)."""
        visual = self.visual
        x = visual._embeds(images)
        statistics = [_patch_statistics(x)]
        for block in visual.transformer.resblocks:  # the transformer's own loop (batch-first), one block at a time
            x = block(x)
            statistics.append(_patch_statistics(x))
        x = visual.ln_post(x) @ visual.proj
        return x[:, 0], x[:, 1:], torch.stack(statistics, dim=1)

    def encode_text_with_layer_statistics(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``encode_text_with_tokens`` plus ``[N, text_layers + 1, text_width]``: the per-channel
        mean over each description's tokens up to its EOT of the text transformer's input
        (token + position embeddings) and of every block's output. The description-side
        twin of ``encode_image_with_layer_statistics``; the input level is a bag of word
        embeddings, which keeps which words were used even when the blocks mix them."""
        x, mask = self._text_input(self.token_embedding(text))
        eot = text.argmax(dim=-1)
        kept = (torch.arange(text.shape[1], device=text.device)[None, :] <= eot[:, None]).unsqueeze(-1)
        statistics = [_token_means(x, kept)]
        for block in self.transformer.resblocks:  # batch-first, as the transformer's own loop
            x = block(x, attn_mask=mask)
            statistics.append(_token_means(x, kept))
        states = self.ln_final(x) @ self.text_projection
        return states[torch.arange(states.shape[0], device=states.device), eot], states, torch.stack(statistics, dim=1)

    def encode_text_tokens(self, text: torch.Tensor) -> torch.Tensor:
        """Per-token text states after ``ln_final``, ``[N, L, text_width]`` (not projected)."""
        return self.text_states(self.token_embedding(text))

    def text_states(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Per-token states after ``ln_final`` from token embeddings ``[N, L, text_width]``.

        The entry point for learnable prompt context (CoOp), whose tokens are vectors
        rather than vocabulary ids.
        """
        x, mask = self._text_input(embeddings)
        return self.ln_final(self.transformer(x, attn_mask=mask))

    def _text_input(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The text transformer's input for ``[N, L, text_width]`` embeddings (positions added,
        in the transformer's dtype) and its causal mask, both cut to length ``L``."""
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"text has {length} tokens; this model reads at most {self.context_length}")
        cast_dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        return x, self.attn_mask[:length, :length]

    def encode_text_embeddings(self, embeddings: torch.Tensor, eot_positions: torch.Tensor) -> torch.Tensor:
        """Text features ``[N, embed_dim]`` from token embeddings ``[N, L, text_width]``,
        pooled at ``eot_positions [N]`` (as ``encode_text`` pools at the EOT id)."""
        x = self.text_states(embeddings)
        return x[torch.arange(x.shape[0], device=x.device), eot_positions] @ self.text_projection


def _patch_statistics(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1 + N, W] -> [B, 2, W]``: mean and standard deviation over the N patch tokens."""
    patches = x[:, 1:].float()
    return torch.stack([patches.mean(dim=1), patches.std(dim=1)], dim=1)


def _token_means(x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``[N, L, W]`` and ``kept [N, L, 1]`` (bool) ``-> [N, W]``: the mean over the kept tokens."""
    kept = kept.to(torch.float32)
    return (x.float() * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)


def trim_text_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Cut a zero-padded token batch ``[N, 248]`` after its longest sequence's EOT.

    Exact for causal CLIP text encoders: the columns removed are padding after every
    row's EOT and cannot reach the pooled EOT state.
    """
    if tokens.numel() == 0:
        return tokens
    longest = int(tokens.argmax(dim=-1).max().item()) + 1
    return tokens[:, :longest]


def encode_text_by_length(model: LongCLIP, tokens: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """``model.encode_text`` with rows grouped by length, each group cut to its own longest.

    Exact for the same reason as ``trim_text_tokens`` (rows never see each other, and
    nothing after a row's EOT reaches its pooled state), but a batch of descriptions
    of mixed length skips most padding instead of only the tail shared by every row.
    Returns ``[N, D]`` in the input order.
    """
    if tokens.shape[0] <= group_size:
        return model.encode_text(trim_text_tokens(tokens))
    lengths = tokens.argmax(dim=-1) + 1
    order = lengths.argsort()
    features = None
    for rows in order.split(group_size):
        chunk = model.encode_text(tokens[rows, : int(lengths[rows].max())])
        if features is None:
            features = chunk.new_empty(tokens.shape[0], chunk.shape[1])
        features[rows] = chunk
    return features


def create_longclip(name_or_arch: str | LongCLIPArch, attention: str = "auto") -> LongCLIP:
    """A randomly initialised Long-CLIP from a registered name or an architecture."""
    arch = get_arch(name_or_arch) if isinstance(name_or_arch, str) else copy.copy(name_or_arch)
    return LongCLIP(arch, attention)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
