"""The Long-CLIP tokenizer: OpenAI CLIP's byte-level BPE with a 248-token context.

open_clip's ``SimpleTokenizer`` ships the identical vocabulary file and, given
``context_length=248``, produces the reference ids: SOT 49406, text, EOT 49407, zero
padding; text over 248 tokens keeps its first 248 tokens with the last set to EOT
(MTPG-AIAA relies on this truncation; upstream Long-CLIP raises unless asked to truncate).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from open_clip.tokenizer import SimpleTokenizer

from .longclip import LONGCLIP_CONTEXT_LENGTH

SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407


class LongCLIPTokenizer:
    """Callable ``texts -> LongTensor [N, context_length]``; also counts truncations."""

    def __init__(self, context_length: int = LONGCLIP_CONTEXT_LENGTH):
        self.context_length = context_length
        self._bpe = _shared_bpe()

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        with torch.device("cpu"):  # token ids are data: made on the CPU even inside a meta-device build
            return self._bpe(list(texts), context_length=self.context_length)

    def token_count(self, text: str) -> int:
        """Tokens ``text`` needs including SOT and EOT (may exceed ``context_length``)."""
        return len(self._bpe.encode(text)) + 2

    def is_truncated(self, text: str) -> bool:
        return self.token_count(text) > self.context_length


@lru_cache(maxsize=1)
def _shared_bpe() -> SimpleTokenizer:
    # Building the BPE tables takes ~0.5 s; every tokenizer instance can share one.
    return SimpleTokenizer(context_length=LONGCLIP_CONTEXT_LENGTH)


def get_tokenizer(context_length: int = LONGCLIP_CONTEXT_LENGTH) -> LongCLIPTokenizer:
    """The tokenizer for every model in this package."""
    return LongCLIPTokenizer(context_length)
