"""Self-attention of the Long-CLIP blocks as one ``F.scaled_dot_product_attention`` call.

open_clip's blocks call ``nn.MultiheadAttention``, which reaches SDPA too, but the text
tower passes its causal mask as a float ``[L, L]`` tensor of ``-inf``: SDPA must then add an
arbitrary mask, which keeps it off the flash kernel. The mask of the release is purely
causal (``triu(-inf, 1)``), so ``is_causal=True`` with no mask is the same attention, and
the flash / memory-efficient kernels take it. The image tower has no mask; it goes through
the same direct call (no ``MultiheadAttention`` wrapper, no transposes to sequence-first).

Modes (``LongCLIP.attention``, ``set_attention``):

  auto    the fused call for CUDA tensors, open_clip's ``MultiheadAttention`` elsewhere, so
          CPU outputs stay bit for bit those of the release path (the published CPU figures)
  sdpa    the fused call on every device
  module  open_clip's ``MultiheadAttention`` with the float mask, on every device

The parameters and state-dict keys are open_clip's (``attn.in_proj_weight``, ...): a block
only changes class, as ``LayerNormFp32`` does.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

ATTENTION_MODES = ("auto", "sdpa", "module")


def check_attention_mode(mode: str) -> str:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}; got {mode!r}")
    return mode


def fused_self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, is_causal: bool) -> torch.Tensor:
    """``attn(x, x, x)[0]`` for batch-first ``x [N, L, W]`` through one SDPA call with no mask
    (``is_causal``: each token sees itself and the tokens before it)."""
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)  # [N, H, L, W/H]
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=is_causal)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class FusedAttentionBlock(ResidualAttentionBlock):
    """open_clip's ``ResidualAttentionBlock`` whose self-attention can take ``fused_self_attention``.

    ``causal`` marks the text tower's blocks: in the fused path the mask their caller passes
    (always the release's causal mask, cut to the sequence length) is replaced by
    ``is_causal=True``. A causal block called with no mask, a non-causal block called with a
    mask, and cross-attention keep open_clip's path, so the fused path never changes what a
    block computes.
    """

    causal: bool = False
    attention_mode: str = "auto"

    def uses_fused_attention(self, x: torch.Tensor) -> bool:
        mode = self.attention_mode
        return (mode == "sdpa" or (mode == "auto" and x.is_cuda)) and self.attn.batch_first \
            and self.attn._qkv_same_embed_dim  # fmt: skip

    def attention(self, q_x: torch.Tensor, k_x: torch.Tensor | None = None, v_x: torch.Tensor | None = None,
                  attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if k_x is None and v_x is None and (attn_mask is not None) == self.causal and self.uses_fused_attention(q_x):
            return fused_self_attention(self.attn, q_x, is_causal=self.causal)
        return super().attention(q_x, k_x, v_x, attn_mask)


def use_fused_attention_blocks(visual_blocks, text_blocks, mode: str = "auto") -> None:
    """Make the blocks ``FusedAttentionBlock`` in place (text blocks causal), in ``mode``."""
    check_attention_mode(mode)
    for blocks, causal in ((visual_blocks, False), (text_blocks, True)):
        for block in blocks:
            if type(block) is ResidualAttentionBlock:
                block.__class__ = FusedAttentionBlock
            if isinstance(block, FusedAttentionBlock):
                block.causal = causal
                block.attention_mode = mode


def set_attention(model: nn.Module, mode: str) -> nn.Module:
    """Set the attention mode of every fused-capable block inside ``model`` (any scorer
    holding a Long-CLIP); returns ``model``."""
    check_attention_mode(mode)
    for module in model.modules():
        if isinstance(module, FusedAttentionBlock):
            module.attention_mode = mode
    return model


@contextmanager
def attention_as(model: nn.Module, mode: str):
    """``model``'s blocks in attention ``mode`` inside the block, their own modes after."""
    blocks = [module for module in model.modules() if isinstance(module, FusedAttentionBlock)]
    previous = [block.attention_mode for block in blocks]
    set_attention(model, mode)
    try:
        yield model
    finally:
        for block, mode_before in zip(blocks, previous):
            block.attention_mode = mode_before
