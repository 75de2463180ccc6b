"""Write a small GPT-2-style byte-level BPE tokenizer (``vocab.json`` + ``merges.txt``) for
tests and the toy quickstart, where GPT-2's own 50257-token files are not at hand.

Ids 0..93 are the printable ASCII characters in GPT-2's order ("!" = 0, "." = 13, as in
GPT-2), then the space marker, then one token per given word (with and without a leading
space), then ``<|endoftext|>``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPACE = "\u0120"  # GPT-2's stand-in for the space byte
END_OF_TEXT = "<|endoftext|>"


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair everywhere, repeat."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), pair) for pair in zip(symbols, symbols[1:])]
        rank, best = min(pairs)
        if rank == len(ranks):
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_small_gpt2_tokenizer(folder: str | Path, words: Iterable[str]) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` under ``folder``; ``words`` are ASCII words
    without spaces that become single tokens. Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {chr(code): code - 33 for code in range(33, 127)}
    vocab[SPACE] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        if not word.isascii() or not word.isprintable() or " " in word or not word:
            raise ValueError(f"small tokenizer words must be printable ASCII without spaces, got {word!r}")
        for variant in (word, SPACE + word):
            # each new merge ranks last, so words already encoded as one token are unaffected
            while len(pieces := _apply_merges(list(variant), ranks)) > 1:
                ranks[(pieces[0], pieces[1])] = len(ranks)
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
    vocab[END_OF_TEXT] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in ranks]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
