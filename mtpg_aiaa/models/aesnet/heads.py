"""Per-attribute heads: the image feature *integrated* with an attribute's text embedding,
then *mapped* by that attribute's own projection into the attribute's embedding space.

The paper says only that "image-based visual features are integrated with attribute-based
text features and the integrated features are mapped into different embedding spaces".
Our design (docs/aesnet.md):

- the attribute's text embedding ``q_a`` is the frozen text tower's feature of a short
  prompt naming the attribute ("the lighting of the image"), fixed for the run;
- ``integration="film"``: ``h_a = LN(v) * (1 + gamma(q_a)) + beta(q_a)``, with ``gamma, beta``
  linear maps shared by every attribute (feature-wise modulation: the text picks which
  channels of the image feature the attribute reads); ``"none"``: ``h_a = LN(v)``;
- the map ``P_a``: a two-layer MLP per attribute into a ``D``-wide space, l2-normalised;
- the descriptions enter the same space through a per-attribute linear ``W_a`` on the
  frozen text feature (the tower itself does not train).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INTEGRATIONS = ("film", "none")


class AttributeHeads(nn.Module):
    """``v [B, C]`` -> ``{attribute: [B, D]}`` l2-normalised image embeddings, and frozen
    description features ``[B, E]`` -> the same spaces.

    Args:
        attributes: attribute names, in order.
        attribute_embeddings: ``[A, E]`` the frozen text features of the attribute prompts.
        image_dim: ``C``; embed_dim: ``D``; hidden_dim: width of each projection MLP.
    """

    def __init__(self, attributes: Sequence[str], attribute_embeddings: torch.Tensor, image_dim: int,
                 embed_dim: int = 256, hidden_dim: int = 512, integration: str = "film"):  # fmt: skip
        super().__init__()
        if integration not in INTEGRATIONS:
            raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
        if attribute_embeddings.shape[0] != len(attributes):
            raise ValueError(f"{attribute_embeddings.shape[0]} attribute embeddings for {len(attributes)} attributes")
        self.attributes, self.integration = tuple(attributes), integration
        text_dim = attribute_embeddings.shape[1]
        self.register_buffer("attribute_embeddings", F.normalize(attribute_embeddings.float(), dim=-1))
        self.norm = nn.LayerNorm(image_dim)
        if integration == "film":
            self.gamma, self.beta = nn.Linear(text_dim, image_dim), nn.Linear(text_dim, image_dim)
            for layer in (self.gamma, self.beta):  # start as the identity: the heads first see LN(v)
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.image_projections = nn.ModuleDict({
            name: nn.Sequential(nn.Linear(image_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
            for name in self.attributes
        })  # fmt: skip
        self.text_projections = nn.ModuleDict({name: nn.Linear(text_dim, embed_dim) for name in self.attributes})

    def integrate(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """``v [B, C]`` integrated with attribute ``index``'s text embedding -> ``[B, C]``."""
        normed = self.norm(image)
        if self.integration == "none":
            return normed
        query = self.attribute_embeddings[index]
        return normed * (1 + self.gamma(query)) + self.beta(query)

    def embed_images(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B, C]`` -> ``{attribute: [B, D]}``, l2-normalised."""
        return {name: F.normalize(self.image_projections[name](self.integrate(image, i)), dim=-1)
                for i, name in enumerate(self.attributes)}  # fmt: skip

    def embed_texts(self, text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{attribute: [B, E]}`` frozen description features -> ``{attribute: [B, D]}``, l2-normalised."""
        return {name: F.normalize(self.text_projections[name](text[name].float()), dim=-1) for name in text}
