"""The description-image fusion head exactly as released with MTPG-AIAA (``fusion=official``).

Every "attention" product here is taken over the BATCH axis (``[B, D] @ [D, B]``), with
no softmax and no scaling, so a sample's output depends on the other samples in its
batch and on the batch size. That is the released behaviour and is kept bit-for-bit so
the authors' checkpoint reproduces; ``fusion=token`` is the batch-independent design.

Layer names match the checkpoint keys, including the typo ``query_text_2`` and the
layers the forward never uses (they are in the file and are loaded strictly).
"""
from __future__ import annotations

import math

import torch
from torch import nn

SQUARE_LAYERS = (
    "query_text", "key_text", "value_text",
    "query_image", "key_image", "value_image",
    "query_image_s", "key_image_s", "value_image_s",
    "query_text_s", "key_text_s", "value_text_s",
    "query_image_s_2", "key_image_s_2", "value_image_s_2",
    "query_text_2", "key_text_s_2", "value_text_s_2",
    "fc3", "fc4",
)  # fmt: skip
DOUBLE_IN_LAYERS = ("fc1", "fc2", "mlp")
HALF_IN_LAYERS = ("exband1", "exband2")
UNUSED_LAYERS = (
    "key_text", "value_text", "query_image",
    "query_image_s_2", "key_image_s_2", "value_image_s_2",
    "query_text_2", "key_text_s_2", "value_text_s_2",
    "ffn",
)  # fmt: skip


def pool_pairs(x: torch.Tensor) -> torch.Tensor:
    """Average neighbouring feature pairs, ``[B, D] -> [B, D/2]`` (the released AvgPool1d(2))."""
    return x.unflatten(-1, (-1, 2)).mean(dim=-1)


class OfficialFusion(nn.Module):
    """Fuses image features ``I`` and description features ``T`` (both ``[B, D]``, l2-normalised)
    into the aesthetic feature ``F [B, D]`` compared with the level prompts."""

    needs_tokens = False

    def __init__(self, embed_dim: int):
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        self.embed_dim = embed_dim
        for name in SQUARE_LAYERS:
            self.add_module(name, nn.Linear(embed_dim, embed_dim))
        for name in DOUBLE_IN_LAYERS:
            self.add_module(name, nn.Linear(2 * embed_dim, embed_dim))
        for name in HALF_IN_LAYERS:
            self.add_module(name, nn.Linear(embed_dim // 2, embed_dim))
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, embed_dim // 2), nn.ReLU(), nn.Linear(embed_dim // 2, embed_dim)
        )

    def cross_step(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: each modality attends to the other across the batch. Returns ``(I1, T1)``."""
        text_1 = self.fc1(torch.cat([text, (self.query_text(text) @ self.key_image(image).T) @ self.value_image(image)], dim=-1))
        # The release reuses the same three layers with the roles swapped.
        image_1 = self.fc2(torch.cat([image, (self.query_text(image) @ self.key_image(text).T) @ self.value_image(text)], dim=-1))
        return image_1, text_1

    def gated_self_step(self, image_1: torch.Tensor, text_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3: self products gated by the other modality. Returns ``(I2, T2)``."""
        q_t, k_t, v_t = self.query_text_s(text_1), self.key_text_s(text_1), self.value_text_s(text_1)
        q_i, k_i, v_i = self.query_image_s(image_1), self.key_image_s(image_1), self.value_image_s(image_1)
        gate_t = torch.sigmoid(self.exband1(pool_pairs((q_t @ k_t.T) @ v_t)))
        gate_i = torch.sigmoid(self.exband2(pool_pairs((q_i @ k_i.T) @ v_i)))
        text_2 = self.fc4((((1 + gate_i) * q_t) @ ((1 + gate_i) * k_t).T) @ v_t)
        image_2 = self.fc3((((1 + gate_t) * q_i) @ ((1 + gate_t) * k_i).T) @ v_i)
        return image_2, text_2

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        image_1, text_1 = self.cross_step(image, text)
        image_2, text_2 = self.gated_self_step(image_1, text_1)
        residual = self.mlp(torch.cat([text_2, image_2], dim=-1))  # text first, as released
        gate = torch.sigmoid(residual)
        return (1 - gate) * image + gate * residual  # not re-normalised, as released


def init_logit_scale() -> torch.Tensor:
    """The head's own temperature, initialised at ln(1/0.07) like CLIP's."""
    return torch.tensor(math.log(1 / 0.07))
