"""Learnable prompt context for the five level prompts (CoOp; ours, beside the fixed prompts).

CoOp (Zhou et al., 2022) replaces a prompt's hand-written opening words by ``n`` vectors
learned in the token-embedding space. Here the level prompt ``An image with {level}
aesthetics.`` becomes ``[SOT] v_1 ... v_n {level} aesthetics. [EOT]``: the level word
and the closing words stay fixed, so the five prompts keep their order and meaning, and
only the context is learned. ``per_level`` gives each level its own context (CoOp's
class-specific variant). The vectors start from the embeddings of ``An image with`` when
``n`` equals its token count (CoOp's ``ctx_init``), else from N(0, 0.02^2) as in CoOp.
"""
from __future__ import annotations

import torch
from torch import nn

from ...backbone.longclip import trim_text_tokens
from .prompts import LEVELS

INIT_PHRASE = "An image with"
_PLACEHOLDER = "X"  # one BPE token; its embeddings are replaced by the learned vectors


class LearnablePromptContext(nn.Module):
    """``n`` learnable context vectors shared by (or per) the five level prompts.

    Args:
        token_embedding: the text tower's token embedding (read for the initialisation).
        tokenize: the model's tokenizer (``texts -> [N, L]`` ids).
        length: number of context vectors ``n`` (>= 1).
        per_level: one context per level (``[5, n, W]``) instead of a shared one (``[n, W]``).
    """

    def __init__(self, token_embedding: nn.Embedding, tokenize, length: int, per_level: bool = False):
        super().__init__()
        if length < 1:
            raise ValueError(f"prompt context length must be >= 1, got {length}")
        self.length, self.per_level = length, per_level
        width = token_embedding.weight.shape[1]
        templates = [" ".join([_PLACEHOLDER] * length) + f" {level} aesthetics." for level in LEVELS]
        # Cut after the longest EOT: the padding cannot reach the pooled EOT state (causal mask).
        self.register_buffer("tokens", trim_text_tokens(tokenize(templates)), persistent=False)
        init_tokens = tokenize([INIT_PHRASE])[0]
        init_ids = init_tokens[1 : int(init_tokens.argmax())]  # between SOT and EOT
        if len(init_ids) == length:
            with torch.no_grad():
                # on the embedding's device (the module moves as a whole), so a meta-device build works too
                vectors = token_embedding.weight[init_ids.to(token_embedding.weight.device)].detach().float().clone()
        else:
            vectors = torch.randn(length, width) * 0.02
        if per_level:
            vectors = vectors.unsqueeze(0).repeat(len(LEVELS), 1, 1)
        self.vectors = nn.Parameter(vectors)

    def embeddings(self, token_embedding: nn.Embedding) -> tuple[torch.Tensor, torch.Tensor]:
        """The five prompts as embeddings ``[5, L, W]`` and their EOT positions ``[5]``."""
        fixed = token_embedding(self.tokens)
        context = self.vectors if self.per_level else self.vectors.expand(len(LEVELS), -1, -1)
        prompts = torch.cat([fixed[:, :1], context.to(fixed.dtype), fixed[:, 1 + self.length :]], dim=1)
        return prompts, self.tokens.argmax(dim=-1)
