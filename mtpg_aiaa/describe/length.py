"""How long a description is for Long-CLIP, and trimming a paragraph cut by the token budget.

The generator counts LLaMA tokens; MTPG-AIAA reads the text with Long-CLIP's BPE, which
keeps 248 tokens including its start and end tokens. The two tokenisers differ, so the
budget is an estimate and every output is measured again here (docs/descriptions.md).
"""
from __future__ import annotations

import re

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) that is
# followed by whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def longclip_token_counts(texts: list[str]) -> list[int]:
    """Long-CLIP tokens each text needs, start and end tokens included (may exceed 248)."""
    from mtpg_aiaa.backbone.tokenizer import get_tokenizer  # open_clip is slow to import; only when counting

    tokenizer = get_tokenizer()
    return [tokenizer.token_count(text) for text in texts]


def longclip_context_length() -> int:
    from mtpg_aiaa.backbone.longclip import LONGCLIP_CONTEXT_LENGTH

    return LONGCLIP_CONTEXT_LENGTH


def trim_to_last_sentence(text: str) -> str:
    """Drop an unfinished last sentence; text with no complete sentence is returned as is."""
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()].rstrip()
