"""CG-IAA's tokenizer: any folder ``AutoTokenizer`` loads locally (slow GPT-2 files, or the
``tokenizer.json`` + ``tokenizer_config.json`` that transformers 5's ``save_pretrained`` writes),
never code from the folder."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from test_cgiaa_generator import TINY_CLIP, WORDS, _release_file, tiny_expert
from transformers import AutoTokenizer, GPT2Tokenizer

from helpers import load_script
from mtpg_aiaa.backbone.longclip import LongCLIP
from mtpg_aiaa.models.cgiaa import load_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.tokenizer import TokenizerNotFound, TokenizerRefused, decode_critique

TEXT = "the sky is blue. colors are vivid and warm!"


@pytest.fixture()
def slow_and_fast(tmp_path):
    """A GPT-2 folder in the release's files, and the same tokenizer re-saved by transformers."""
    slow = write_small_gpt2_tokenizer(tmp_path / "slow", WORDS)
    fast = tmp_path / "fast"
    GPT2Tokenizer.from_pretrained(str(slow), local_files_only=True).save_pretrained(str(fast))
    return slow, fast


def test_a_saved_tokenizer_folder_loads_and_encodes_as_the_release_files(slow_and_fast):
    slow, fast = slow_and_fast
    assert (fast / "tokenizer.json").is_file() and not (fast / "vocab.json").exists()
    released, saved = load_gpt2_tokenizer(slow), load_gpt2_tokenizer(fast)
    ids = released.encode(TEXT)
    assert saved.encode(TEXT) == ids and ids[-1] == 0  # "!" is GPT-2's id 0
    assert AutoTokenizer.from_pretrained(str(fast), local_files_only=True).encode(TEXT) == ids
    assert decode_critique(saved, ids) == decode_critique(released, ids) == TEXT


def test_a_folder_with_only_tokenizer_json_loads(tmp_path, slow_and_fast):
    _, fast = slow_and_fast
    (fast / "tokenizer_config.json").unlink()
    assert load_gpt2_tokenizer(fast).encode(TEXT) == load_gpt2_tokenizer(slow_and_fast[0]).encode(TEXT)


@pytest.mark.parametrize("config_name", ["tokenizer_config.json", "config.json"])
def test_auto_map_is_refused(slow_and_fast, config_name):
    for folder in slow_and_fast:
        path = folder / config_name
        config = json.loads(path.read_text()) if path.exists() else {}
        config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
        path.write_text(json.dumps(config))
        (folder / "evil.py").write_text("raise SystemExit('remote code ran')\n")
        with pytest.raises(TokenizerRefused, match=f"{config_name}: 'auto_map'"):
            load_gpt2_tokenizer(folder)


def test_unreadable_or_missing_tokenizer_files_are_named(tmp_path, slow_and_fast):
    _, fast = slow_and_fast
    (fast / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerRefused, match="tokenizer.json: not valid JSON"):
        load_gpt2_tokenizer(fast)
    (fast / "tokenizer.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(TokenizerRefused, match="tokenizer.json"):
        load_gpt2_tokenizer(fast)
    (fast / "tokenizer.json").unlink()
    with pytest.raises(TokenizerNotFound, match="neither tokenizer.json nor vocab.json and merges.txt"):
        load_gpt2_tokenizer(fast)


def test_critique_cli_takes_a_saved_tokenizer_folder(tmp_path, slow_and_fast, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    torch.save({f"clip_model.{k}": v for k, v in LongCLIP(TINY_CLIP).state_dict().items()}, weights / "base_model.pt")
    vocab_size = len(load_gpt2_tokenizer(slow_and_fast[0]))  # experts sized to the tokenizer (critique.py checks it)
    for seed, name in enumerate(("color", "composition", "dof", "general")):
        torch.save(_release_file(tiny_expert(seed, vocab_size=vocab_size)), weights / f"{name}.pt")
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(image)
    cli = load_script("scripts/critique.py")
    outputs = []
    for folder in slow_and_fast:
        assert cli.main(["--weights", str(weights), "--tokenizer", str(folder), str(image), "--max-steps", "6", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    (slow_and_fast[1] / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["x.Y", None]}}))
    assert cli.main(["--weights", str(weights), "--tokenizer", str(slow_and_fast[1]), str(image)]) == 2
    assert "auto_map" in capsys.readouterr().err
