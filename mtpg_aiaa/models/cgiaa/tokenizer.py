"""GPT-2's tokenizer for the experts, from a local folder or the Hugging Face cache, never
downloaded behind the user's back."""
from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizerBase

RELEASED_TOKENIZER = "gpt2"
RELEASED_STOP_TEXT = "."
SLOW_FILES = ("vocab.json", "merges.txt")  # what the release's GPT2Tokenizer reads
FAST_FILE = "tokenizer.json"  # what transformers 5's save_pretrained writes (with tokenizer_config.json)
TOKENIZER_FILES = [*SLOW_FILES, FAST_FILE, "tokenizer_config.json", "special_tokens_map.json"]
# Read before transformers sees them; GPT-2's tokenizer.json is 1.4 MB, large LLMs' about 20 MB.
MAX_JSON_BYTES = {"tokenizer_config.json": 1 << 20, "config.json": 1 << 20, FAST_FILE: 64 << 20}


class TokenizerNotFound(FileNotFoundError):
    """Neither a folder nor a cached Hugging Face name."""


class TokenizerRefused(ValueError):
    """A tokenizer folder that would run code from the folder, or whose files cannot be read."""


def load_gpt2_tokenizer(name_or_dir: str | Path = RELEASED_TOKENIZER, allow_download: bool = False) -> PreTrainedTokenizerBase:
    """GPT-2's byte-level BPE tokenizer, or any tokenizer folder ``AutoTokenizer`` loads locally.

    A folder with ``vocab.json`` and ``merges.txt`` is read by ``GPT2Tokenizer``, as the
    release does; a folder with only ``tokenizer.json`` (what ``save_pretrained`` writes in
    transformers 5) by ``AutoTokenizer``, local files only and no code from the folder: a
    config with ``auto_map`` is refused.

    Args:
        name_or_dir: a folder written by ``save_pretrained`` (or holding ``vocab.json`` and
            ``merges.txt``), or a Hub name such as ``gpt2`` looked up in the local cache.
        allow_download: fetch a Hub name that is not cached; refused when ``HF_HUB_OFFLINE`` is set.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return _load_tokenizer_folder(path)
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
                "tokenizer.json, or vocab.json and merges.txt" + ("" if offline else ", or allow the download explicitly")
            ) from None
        folder = snapshot_download(str(name_or_dir), allow_patterns=TOKENIZER_FILES)
    return load_gpt2_tokenizer(folder)


def _load_tokenizer_folder(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``path``; see ``load_gpt2_tokenizer``."""
    has_slow = all((path / name).is_file() for name in SLOW_FILES)
    if not has_slow and not (path / FAST_FILE).is_file():
        raise TokenizerNotFound(f"{path} is not a tokenizer folder: it holds neither {FAST_FILE} nor {' and '.join(SLOW_FILES)}")
    for name in ("tokenizer_config.json", "config.json"):
        # transformers would import a class named here from the folder (remote code)
        if (config := _read_json(path, name)) is not None and "auto_map" in config:
            raise TokenizerRefused(f"{path / name}: 'auto_map' asks to run code from the folder; refused")
    if has_slow:
        return GPT2Tokenizer.from_pretrained(str(path), local_files_only=True)
    _read_json(path, FAST_FILE)  # a readable, bounded file before the tokenizers library parses it
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)


def _read_json(folder: Path, name: str) -> dict | None:
    """``folder/name`` parsed as a JSON object, None when absent; size-checked before reading."""
    file = folder / name
    if not file.is_file():
        return None
    if (size := file.stat().st_size) > MAX_JSON_BYTES[name]:
        raise TokenizerRefused(f"{file}: {size} bytes, more than a tokenizer file's {MAX_JSON_BYTES[name]}")
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerRefused(f"{file}: not valid JSON ({error})") from None
    except RecursionError:
        raise TokenizerRefused(f"{file}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise TokenizerRefused(f"{file}: expected a JSON object, got {type(value).__name__}")
    return value


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
