"""ClipCap's transformer mapper as CG-IAA's experts use it (``clip_project.*`` in their files).

A CLIP feature ``[B, clip_dim]`` becomes ``clip_length`` tokens through one linear layer; a
learned constant of ``prefix_length`` tokens is appended; a stack of pre-norm self-attention
layers runs over both; the constant's positions come out as the GPT-2 prefix ``[B, prefix_length, D]``.
Module names follow the release so its state dicts load strictly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

RELEASED_HEADS = 8  # fixed in the release, not stored in the file


@dataclass(frozen=True)
class MapperConfig:
    """Sizes of a mapper; the released experts are ``MapperConfig()``."""

    clip_dim: int = 512
    embed_dim: int = 768
    clip_length: int = 40
    prefix_length: int = 40
    num_layers: int = 8
    num_heads: int = RELEASED_HEADS
    mlp_dim: int = 1536  # MLP ratio 2

    def to_dict(self) -> dict:
        return asdict(self)


class MapperAttention(nn.Module):
    """Multi-head self-attention: queries and keys/values without bias (one fused key/value
    matrix, keys first per head), output projection with bias."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        queries = self.to_queries(x).view(batch, length, self.num_heads, head_dim).transpose(1, 2)
        # the fused projection's output is laid out [key | value], each split into heads
        keys, values = self.to_keys_values(x).view(batch, length, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((queries @ keys.transpose(-2, -1)) * self.scale, dim=-1)
        return self.project((weights @ values).transpose(1, 2).reshape(batch, length, dim))


class MapperMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class MapperLayer(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MapperAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MapperMlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MapperStack(nn.Module):
    def __init__(self, config: MapperConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            MapperLayer(config.embed_dim, config.num_heads, config.mlp_dim) for _ in range(config.num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x  # no final norm, as released


class TransformerMapper(nn.Module):
    """CLIP feature -> GPT-2 prefix embeddings (see the module docstring)."""

    def __init__(self, config: MapperConfig = MapperConfig()):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.clip_dim, config.clip_length * config.embed_dim)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_length, config.embed_dim))
        self.transformer = MapperStack(config)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, clip_dim] -> [B, prefix_length, embed_dim]``."""
        mapped = self.linear(features).view(features.shape[0], self.config.clip_length, self.config.embed_dim)
        constant = self.prefix_const.unsqueeze(0).expand(features.shape[0], -1, -1)
        out = self.transformer(torch.cat([mapped, constant], dim=1))
        return out[:, self.config.clip_length :]


def infer_mapper_config(state_dict: dict[str, torch.Tensor], num_heads: int = RELEASED_HEADS) -> MapperConfig:
    """A mapper's sizes from its tensors (keys without the ``clip_project.`` prefix).

    Raises ``KeyError`` naming the first key the sizes are read from that is absent.
    """
    linear = state_dict["linear.weight"]
    prefix_length, embed_dim = state_dict["prefix_const"].shape
    num_layers = len({k.split(".")[2] for k in state_dict if k.startswith("transformer.layers.")})
    mlp_dim = state_dict["transformer.layers.0.mlp.fc1.weight"].shape[0] if num_layers else 2 * embed_dim
    return MapperConfig(
        clip_dim=linear.shape[1],
        embed_dim=embed_dim,
        clip_length=linear.shape[0] // embed_dim,
        prefix_length=prefix_length,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
    )
