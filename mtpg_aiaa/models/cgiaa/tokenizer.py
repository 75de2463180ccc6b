"""GPT-2's tokenizer for the experts, from a local folder or the Hugging Face cache, never
downloaded behind the user's back."""
from __future__ import annotations

import os
from pathlib import Path

from transformers import GPT2Tokenizer, PreTrainedTokenizerBase

RELEASED_TOKENIZER = "gpt2"
RELEASED_STOP_TEXT = "."
TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]


class TokenizerNotFound(FileNotFoundError):
    """Neither a folder nor a cached Hugging Face name."""


def load_gpt2_tokenizer(name_or_dir: str | Path = RELEASED_TOKENIZER, allow_download: bool = False) -> PreTrainedTokenizerBase:
    """GPT-2's byte-level BPE tokenizer (the slow ``GPT2Tokenizer`` the release uses).

    Args:
        name_or_dir: a folder written by ``save_pretrained`` (or holding ``vocab.json`` and
            ``merges.txt``), or a Hub name such as ``gpt2`` looked up in the local cache.
        allow_download: fetch a Hub name that is not cached; refused when ``HF_HUB_OFFLINE`` is set.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        missing = [f for f in ("vocab.json", "merges.txt") if not (path / f).is_file()]
        if missing:
            raise TokenizerNotFound(f"{path} is not a GPT-2 tokenizer folder: {', '.join(missing)} missing")
        return GPT2Tokenizer.from_pretrained(str(path))
    if path.suffix or os.sep in str(name_or_dir):
        raise TokenizerNotFound(f"tokenizer folder not found: {path}")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")
    # resolved to a folder first: transformers 5 builds an empty tokenizer for an unknown name
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(str(name_or_dir), allow_patterns=TOKENIZER_FILES, local_files_only=True)
    except Exception:  # noqa: BLE001 - any lookup failure means "not cached"
        if not allow_download or offline:
            raise TokenizerNotFound(
                f"tokenizer {name_or_dir!r} is not in the Hugging Face cache; pass a folder holding "
                "vocab.json and merges.txt" + ("" if offline else ", or allow the download explicitly")
            ) from None
        folder = snapshot_download(str(name_or_dir), allow_patterns=TOKENIZER_FILES)
    return load_gpt2_tokenizer(folder)


def stop_token_id(tokenizer: PreTrainedTokenizerBase, text: str = RELEASED_STOP_TEXT) -> int:
    """The first id of ``text`` (13 for "." in GPT-2), as the release picks its stop token."""
    return tokenizer.encode(text)[0]


# transformers' classic clean-up of spaces before punctuation and English contractions
_CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def decode_critique(tokenizer: PreTrainedTokenizerBase, tokens: list[int], clean_up_spaces: bool = False) -> str:
    """Token ids -> text as the release prints it (trailing whitespace removed).

    ``clean_up_spaces`` applies the clean-up transformers 4 did by default before v4.45
    (" ," -> ","), for outputs of a release installed with such an old transformers.
    """
    text = tokenizer.decode(tokens, clean_up_tokenization_spaces=False)
    if clean_up_spaces:
        for old, new in _CLEAN_UPS:
            text = text.replace(old, new)
    return text.rstrip()
