"""Checks that a GPT-2 tokenizer can be used with CG-IAA's experts, each a one-line error.

A tokenizer folder whose ``vocab.json`` is not JSON makes the ``tokenizers`` library raise a
bare ``Exception("Error while initializing BPE ...")``; a tokenizer of another vocabulary
than the experts' GPT-2 embedding decodes every token id to the wrong text, so the critiques
read as garbage while the command exits 0.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from mtpg_aiaa.data.errors import BadInputError

MAX_VOCAB_BYTES = 64 * 1024 * 1024  # GPT-2's vocab.json is 1 MB; far larger is not a tokenizer file


def check_tokenizer_files(folder: str | Path) -> None:
    """``folder/vocab.json`` must be a JSON object of token -> non-negative int id (no-op for a
    Hub name, which is not a folder); raises ``BadInputError`` naming the file."""
    vocab = Path(folder) / "vocab.json"
    if not Path(folder).is_dir() or not vocab.is_file():
        return  # the loader reports a missing folder or file itself
    if vocab.stat().st_size > MAX_VOCAB_BYTES:
        raise BadInputError(f"{vocab}: {vocab.stat().st_size:,} bytes, not a GPT-2 vocabulary (at most {MAX_VOCAB_BYTES:,})")
    try:
        data = json.loads(vocab.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise BadInputError(f"{vocab}: not a JSON vocabulary ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict) or not data:
        raise BadInputError(f"{vocab}: expected a JSON object of token -> id, got {type(data).__name__}")
    bad = next(((k, v) for k, v in data.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0), None)
    if bad is not None:
        raise BadInputError(f"{vocab}: token {bad[0]!r} has id {bad[1]!r}, not a non-negative integer")


def check_tokenizer_fits(tokenizer, experts: Mapping[str, nn.Module], tokenizer_name: str, source: str) -> None:
    """Each expert's GPT-2 embedding must have one row per token of ``tokenizer`` (the released
    experts: 50257, GPT-2's vocabulary); raises ``BadInputError`` naming both."""
    tokens = len(tokenizer)
    for name, expert in experts.items():
        rows = expert.gpt.transformer.wte.num_embeddings
        if rows != tokens:
            raise BadInputError(
                f"tokenizer {tokenizer_name} has {tokens} tokens but the {name} expert in {source} embeds {rows}: "
                "its critiques would decode to the wrong words; pass the tokenizer the experts were trained with "
                "(GPT-2's for the released experts)"
            )
