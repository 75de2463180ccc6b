"""Batch-independent fusion of image patches and description tokens (``fusion=token``, ours).

The released module (``official.py``) multiplies features across the batch axis, so a
prediction depends on the other images in the batch. This design keeps the release's
idea -- each modality attends to the other, then a sigmoid-gated residual on the image
feature -- but every attention runs within one sample, over its own tokens, with
softmax and 1/sqrt(d) scaling:

- the pooled description feature queries the image's patch tokens,
- the pooled image feature queries the description's tokens (padding masked),
- ``r = mlp([text-side summary, image-side summary, ...])`` (two layers, GELU), ``z = sigmoid(r)``,
  ``F = (1 - z) * I + z * r``, as in the release; optional summaries join the concatenation:
  token statistics, and standardised multi-level statistics of the image and of the
  description (``StandardizedProjection``).

See docs/method.md.
"""
from __future__ import annotations

import torch
from torch import nn


class CrossAttentionSummary(nn.Module):
    """One query vector attends over a token sequence: ``[B, D], [B, N, D] -> [B, D]``."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.norm_query = nn.LayerNorm(embed_dim)
        self.norm_tokens = nn.LayerNorm(embed_dim)
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        keys = self.norm_tokens(tokens)
        out, _ = self.attention(self.norm_query(query).unsqueeze(1), keys, keys, key_padding_mask=padding_mask, need_weights=False)
        return out.squeeze(1)


class TokenFusion(nn.Module):
    """Fuses pooled features ``I, T [B, D]`` with patch tokens ``[B, N, D]`` and description
    tokens ``[B, L, D]`` into ``F [B, D]``; sample ``b``'s output reads only sample ``b``."""

    needs_tokens = True

    def __init__(self, embed_dim: int, num_heads: int = 8, token_statistics: bool = False,
                 layer_statistics_dim: int = 0, description_statistics_dim: int = 0):  # fmt: skip
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.text_to_image = CrossAttentionSummary(embed_dim, num_heads)
        self.image_to_text = CrossAttentionSummary(embed_dim, num_heads)
        self.token_statistics = token_statistics
        # Multi-level statistics, keyed by the encode() feature that carries them: the image's
        # (backbone.encode_image_with_layer_statistics) and the description's
        # (backbone.encode_text_with_layer_statistics).
        sizes = {"image_layer_statistics": layer_statistics_dim, "text_layer_statistics": description_statistics_dim}
        self.statistics = nn.ModuleDict({key: StandardizedProjection(size, embed_dim) for key, size in sizes.items() if size})
        summaries = (5 if token_statistics else 2) + len(self.statistics)
        # Ours: a hidden layer (the release's mlp is one linear map), so the residual can
        # combine what each modality found non-linearly.
        self.mlp = nn.Sequential(nn.Linear(summaries * embed_dim, 2 * embed_dim), nn.GELU(), nn.Linear(2 * embed_dim, embed_dim))

    def forward(
        self,
        image: torch.Tensor,
        text: torch.Tensor,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_padding: torch.Tensor,
        statistics: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``text_padding [B, L]`` is True where a description position is padding;
        ``statistics`` maps each key of ``self.statistics`` to its ``[B, S]`` values."""
        text_side = self.text_to_image(text, image_tokens)
        image_side = self.image_to_text(image, text_tokens, text_padding)
        summaries = [text_side, image_side]
        if self.token_statistics:
            summaries += token_statistics(image_tokens, text_tokens, text_padding)
        for key, projection in self.statistics.items():
            if statistics is None or key not in statistics:
                raise ValueError(f"this fusion reads {key}: encode with the model's encode(), which adds it")
            summaries.append(projection(statistics[key]))
        residual = self.mlp(torch.cat(summaries, dim=-1))
        gate = torch.sigmoid(residual)
        return (1 - gate) * image + gate * residual


class StandardizedProjection(nn.Module):
    """``[B, S] -> [B, D]``: standardise with a per-feature mean and scale fitted once on the
    training split (``fit``), then a linear map. The mean and scale are fixed buffers, so a
    prediction never depends on the rest of the batch (batch norm's would)."""

    def __init__(self, size: int, embed_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.projection = nn.Linear(size, embed_dim)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.projection((values - self.mean) / self.scale)

    @torch.no_grad()
    def fit(self, values: torch.Tensor) -> None:
        """Per-feature mean and standard deviation of ``values [M, S]`` (training samples)."""
        self.mean.copy_(values.mean(dim=0))
        self.scale.copy_(values.std(dim=0).clamp(min=1e-6))
        self.fitted.fill_(True)


def token_statistics(image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_padding: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel mean and standard deviation of the patch tokens and the mean of the
    description tokens (padding excluded), each ``[B, D]``."""
    kept = (~text_padding).unsqueeze(-1).to(text_tokens.dtype)
    text_mean = (text_tokens * kept).sum(1) / kept.sum(1).clamp(min=1)
    return [image_tokens.mean(1), image_tokens.std(1), text_mean]


class NoFusion(nn.Module):
    """The image-only ablation: ``F = I``; descriptions are ignored."""

    needs_tokens = False
    uses_text = False

    def forward(self, image: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        return image
