"""CG-IAA's released generator, reproduced: mapper arithmetic, released file layouts loaded
strictly, beam search against a step-for-step transcription of ClipCap's loop, the tokenizer
on a small local vocabulary, and the CLI end to end on tiny random weights."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mtpg_aiaa.backbone.clip import build_clip_from_state_dict, load_clip
from mtpg_aiaa.backbone.convert import CheckpointError
from mtpg_aiaa.backbone.longclip import LongCLIP, LongCLIPArch
from mtpg_aiaa.models.cgiaa import (
    CritiqueExpert,
    GPT2Sizes,
    MapperConfig,
    beam_search,
    literal_beam_search,
    load_expert,
    load_gpt2_tokenizer,
    save_expert,
)
from mtpg_aiaa.models.cgiaa.small_tokenizer import write_small_gpt2_tokenizer
from mtpg_aiaa.models.cgiaa.tokenizer import TokenizerNotFound, decode_critique

WORDS = ["the", "sky", "is", "blue", "colors", "are", "vivid", "and", "warm", "light", "sharp", "focus"]
TINY_GPT = GPT2Sizes(vocab_size=128, n_positions=96, n_embd=128, n_layer=2, n_inner=256)
TINY_MAPPER = MapperConfig(clip_dim=32, embed_dim=128, clip_length=3, prefix_length=4, num_layers=2, mlp_dim=256)
TINY_CLIP = LongCLIPArch(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                         text_width=64, text_layers=1, context_length=77)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_expert(seed: int = 0, spread: float = 0.1, vocab_size: int = TINY_GPT.vocab_size) -> CritiqueExpert:
    torch.manual_seed(seed)
    expert = CritiqueExpert(dataclasses.replace(TINY_GPT, vocab_size=vocab_size), TINY_MAPPER)
    for parameter in expert.parameters():  # wider than GPT-2's init so decoding is not near-uniform
        parameter.data.normal_(0, spread)
    return expert.eval()


# --- mapper ---------------------------------------------------------------------------------


def _mapper_by_hand(mapper, features: torch.Tensor) -> torch.Tensor:
    """The released mapper recomputed in float64 with einsum, from its state dict only."""
    sd = {k: v.double() for k, v in mapper.state_dict().items()}
    cfg = mapper.config
    heads, dim = cfg.num_heads, cfg.embed_dim
    x = (features.double() @ sd["linear.weight"].T + sd["linear.bias"]).reshape(-1, cfg.clip_length, dim)
    x = torch.cat([x, sd["prefix_const"].expand(x.shape[0], -1, -1)], dim=1)
    for i in range(cfg.num_layers):
        p = lambda name: sd[f"transformer.layers.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), p("norm1.weight"), p("norm1.bias"), eps=1e-5)
        b, n, _ = h.shape
        q = (h @ p("attn.to_queries.weight").T).reshape(b, n, heads, dim // heads)
        kv = (h @ p("attn.to_keys_values.weight").T).reshape(b, n, 2, heads, dim // heads)
        att = (torch.einsum("bnhd,bmhd->bnmh", q, kv[:, :, 0]) * (dim // heads) ** -0.5).softmax(dim=2)
        out = torch.einsum("bnmh,bmhd->bnhd", att, kv[:, :, 1]).reshape(b, n, dim)
        x = x + out @ p("attn.project.weight").T + p("attn.project.bias")
        h = F.layer_norm(x, (dim,), p("norm2.weight"), p("norm2.bias"), eps=1e-5)
        x = x + torch.relu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")) @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    return x[:, cfg.clip_length :]


def test_mapper_matches_an_independent_recomputation():
    mapper = tiny_expert(1).clip_project
    features = F.normalize(torch.randn(3, TINY_MAPPER.clip_dim), dim=-1)
    out = mapper(features)
    assert out.shape == (3, TINY_MAPPER.prefix_length, TINY_MAPPER.embed_dim)
    torch.testing.assert_close(out.double(), _mapper_by_hand(mapper, features), rtol=1e-4, atol=1e-4)


def test_released_mapper_key_layout_and_size():
    from mtpg_aiaa.models.cgiaa.mapper import TransformerMapper

    mapper = TransformerMapper(MapperConfig())
    sd = mapper.state_dict()
    assert len(sd) == 99 and sd["linear.weight"].shape == (30720, 512) and sd["prefix_const"].shape == (40, 768)
    assert sd["transformer.layers.7.attn.to_keys_values.weight"].shape == (1536, 768)
    assert "transformer.layers.0.attn.to_queries.bias" not in sd and "transformer.layers.0.attn.project.bias" in sd
    assert abs(sum(v.numel() for v in sd.values()) / 1e6 - 53.59) < 0.01


# --- released file layouts ----------------------------------------------------------------


def _release_file(expert: CritiqueExpert, legacy_buffers: bool = True) -> dict[str, torch.Tensor]:
    """The expert as an old-transformers ClipCap ``state_dict()`` would save it."""
    sd = {k: v.clone() for k, v in expert.state_dict().items()}
    if legacy_buffers:
        for i in range(TINY_GPT.n_layer):
            sd[f"gpt.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 96, 96, dtype=torch.uint8))
            sd[f"gpt.transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return sd


def test_expert_file_round_trips_strictly(tmp_path):
    expert = tiny_expert(2)
    torch.save(_release_file(expert), tmp_path / "color.pt")
    loaded = load_expert(tmp_path / "color.pt")
    assert loaded.gpt_sizes == TINY_GPT and loaded.mapper_config == TINY_MAPPER
    assert loaded.gpt.config.n_head == 2  # 128 / 64
    for key, value in expert.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.gpt.lm_head.weight is loaded.gpt.transformer.wte.weight
    for suffix in ("pt", "safetensors"):
        save_expert(loaded, tmp_path / f"again.{suffix}")
        again = load_expert(tmp_path / f"again.{suffix}")
        assert all(torch.equal(again.state_dict()[k], v) for k, v in expert.state_dict().items())


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda sd: sd.pop("clip_project.transformer.layers.1.mlp.fc2.bias"), "clip_project.transformer.layers.1.mlp.fc2.bias"),
        (lambda sd: sd.pop("gpt.transformer.h.1.ln_2.weight"), "gpt.transformer.h.1.ln_2.weight"),
        (lambda sd: sd.__setitem__("clip_project.extra", torch.zeros(1)), "clip_project.extra"),
        (lambda sd: sd.__setitem__("clip_project.transformer.layers.0.attn.to_queries.bias", torch.zeros(128)),
         "clip_project.transformer.layers.0.attn.to_queries.bias"),
        (lambda sd: sd.__setitem__("clip_project.transformer.layers.1.mlp.fc1.bias", torch.zeros(7)),
         "clip_project.transformer.layers.1.mlp.fc1.bias"),
        (lambda sd: sd.pop("clip_project.prefix_const"), "clip_project.prefix_const"),
        (lambda sd: sd.__setitem__("gpt.lm_head.weight", torch.zeros(128, 128)), "gpt.lm_head.weight"),
    ],
)
def test_bad_expert_file_names_file_and_key(tmp_path, edit, named):
    sd = _release_file(tiny_expert(0))
    edit(sd)
    torch.save(sd, tmp_path / "dof.pt")
    with pytest.raises(CheckpointError) as error:
        load_expert(tmp_path / "dof.pt")
    assert "dof.pt" in str(error.value) and named in str(error.value)


def test_expert_file_with_code_is_refused(tmp_path):
    torch.save({"gpt.x": torch.zeros(1), "note": Counter()}, tmp_path / "general.pt")
    with pytest.raises(CheckpointError, match="general.pt"):
        load_expert(tmp_path / "general.pt")


def test_base_model_loads_as_itself_under_clip_model_prefix(tmp_path):
    torch.manual_seed(3)
    clip = LongCLIP(TINY_CLIP)
    torch.save({f"clip_model.{k}": v for k, v in clip.state_dict().items()}, tmp_path / "base_model.pt")
    loaded = load_clip(tmp_path / "base_model.pt")
    assert loaded.context_length == 77 and loaded.arch == TINY_CLIP
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_image(images), clip.eval().encode_image(images))
    stretched = load_clip(tmp_path / "base_model.pt", context_length=248)
    assert stretched.positional_embedding.shape[0] == 248
    sd = {f"clip_model.{k}": v for k, v in clip.state_dict().items()}
    sd.pop("clip_model.ln_final.bias")
    with pytest.raises(CheckpointError, match="clip_model.ln_final.bias"):
        build_clip_from_state_dict(sd, "base_model.pt")
    sd = {f"clip_model.{k}": v for k, v in clip.state_dict().items()} | {"other.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="other.weight"):
        build_clip_from_state_dict(sd, "base_model.pt")


# --- beam search ------------------------------------------------------------------------------


def _prefixes(expert: CritiqueExpert, count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return expert.prefix_embeddings(F.normalize(torch.randn(count, TINY_MAPPER.clip_dim, generator=generator), dim=-1))


def _varied_prefixes(count: int, seed: int) -> torch.Tensor:
    """Prefix embeddings of different scales, so images finish at different steps (mapper
    outputs of a random model are too alike for that)."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-0.5, 0.6, count)[:, None, None]
    return torch.randn(count, TINY_MAPPER.prefix_length, TINY_GPT.n_embd, generator=generator) * scales


def _frequent_stop(expert, prefixes, max_steps) -> int:
    """A stop token the beams actually produce (random models rarely pick a fixed one)."""
    runs = beam_search(expert.gpt, prefixes, stop_token=-1, max_steps=max_steps)
    counts = Counter(t for run in runs for beam in run.tokens for t in beam[1:])
    return counts.most_common(1)[0][0]


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_batched_cached_search_gives_the_literal_loops_tokens(seed):
    expert, max_steps, count = tiny_expert(seed), 12, 4
    prefixes = _varied_prefixes(count, seed)
    stop = _frequent_stop(expert, prefixes, max_steps)
    literal = [literal_beam_search(expert.gpt, prefixes[i : i + 1], stop, max_steps=max_steps) for i in range(count)]
    cached = beam_search(expert.gpt, prefixes, stop, max_steps=max_steps)
    uncached = beam_search(expert.gpt, prefixes, stop, max_steps=max_steps, use_cache=False)
    one_by_one = [beam_search(expert.gpt, prefixes[i : i + 1], stop, max_steps=max_steps)[0] for i in range(count)]
    for a, b, c, d in zip(literal, cached, uncached, one_by_one):
        assert a.tokens == b.tokens == c.tokens == d.tokens
        assert b.scores == pytest.approx(a.scores, abs=1e-5)
        assert all(beam[-1] == stop or len(beam) == max_steps for beam in a.tokens)
    lengths = {len(beam) for run in literal for beam in run.tokens}
    assert len(lengths) > 1  # beams stopped at different steps: the stopped-beam rules were exercised
    assert len({max(map(len, run.tokens)) for run in literal}) > 1  # images finished at different steps


def test_beam_one_is_greedy():
    expert = tiny_expert(4)
    prefix = _prefixes(expert, 1, 4)
    (result,) = beam_search(expert.gpt, prefix, stop_token=13, beam_size=1, max_steps=10)
    sequence, greedy = prefix, []
    with torch.no_grad():
        for _ in range(10):
            token = int(expert.gpt(inputs_embeds=sequence).logits[0, -1].argmax())
            greedy.append(token)
            if token == 13:
                break
            sequence = torch.cat([sequence, expert.gpt.transformer.wte.weight[token][None, None]], dim=1)
    assert result.best == greedy
    assert literal_beam_search(expert.gpt, prefix, 13, beam_size=1, max_steps=10).best == greedy


# --- tokenizer --------------------------------------------------------------------------------


def test_small_tokenizer_ids_and_decoding(tmp_path):
    tokenizer = load_gpt2_tokenizer(write_small_gpt2_tokenizer(tmp_path / "tok", WORDS))
    vocab = json.loads((tmp_path / "tok" / "vocab.json").read_text())
    ids = tokenizer.encode("the sky is blue.")
    assert ids == [vocab["the"], vocab["\u0120sky"], vocab["\u0120is"], vocab["\u0120blue"], vocab["."]]
    assert tokenizer.encode(".") == [13] and tokenizer.encode("!") == [0]  # GPT-2's ids
    assert decode_critique(tokenizer, ids + [vocab["\u0120"]]) == "the sky is blue."
    assert decode_critique(tokenizer, tokenizer.encode("warm , sharp .")) == "warm , sharp ."
    assert decode_critique(tokenizer, tokenizer.encode("warm , sharp ."), clean_up_spaces=True) == "warm, sharp."


def test_tokenizer_is_never_downloaded_silently(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(TokenizerNotFound, match="not in the Hugging Face cache"):
        load_gpt2_tokenizer("gpt2-not-cached-here", allow_download=True)
    with pytest.raises(TokenizerNotFound, match="vocab.json"):
        load_gpt2_tokenizer(tmp_path)


# --- the CLI ----------------------------------------------------------------------------------


def write_tiny_release(tmp_path, vocab_size: int | None = None):
    """A tokenizer folder, a released-layout weights folder (experts sized to the tokenizer
    unless ``vocab_size`` says otherwise) and two images."""
    tok = write_small_gpt2_tokenizer(tmp_path / "tok", WORDS)
    vocab_size = vocab_size or len(load_gpt2_tokenizer(tok))
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    torch.save({f"clip_model.{k}": v for k, v in LongCLIP(TINY_CLIP).state_dict().items()}, weights / "base_model.pt")
    for seed, name in enumerate(("color", "composition", "dof", "general")):
        torch.save(_release_file(tiny_expert(seed, vocab_size=vocab_size)), weights / f"{name}.pt")
    images = []
    for i, colour in enumerate(("red", "blue")):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 30), colour).save(images[-1])
    return tok, weights, images


def critique_cli():
    from helpers import load_script

    return load_script("scripts/critique.py")


def test_critique_cli_on_tiny_released_layout(tmp_path, capsys):
    tok, weights, images = write_tiny_release(tmp_path)
    cli = critique_cli()
    argv = ["--weights", str(weights), "--tokenizer", str(tok), *map(str, images), "--max-steps", "6", "--json"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["image"] for row in rows] == [str(p) for p in images]
    assert all(set(row) == {"image", "color", "composition", "dof", "general"} for row in rows)
    assert cli.main(argv + ["--literal"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    (weights / "dof.pt").unlink()
    assert cli.main(argv) == 2
    assert "dof.pt" in capsys.readouterr().err


def test_critique_cli_refuses_a_tokenizer_the_experts_do_not_embed(tmp_path, capsys):
    """Issue 21 item 11: 128 embedding rows, 141 tokens: garbage critiques with exit 0 before."""
    tok, weights, images = write_tiny_release(tmp_path, vocab_size=128)
    argv = ["--weights", str(weights), "--tokenizer", str(tok), *map(str, images), "--max-steps", "3", "--json"]
    assert critique_cli().main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: tokenizer ") and "has 141 tokens" in err and "embeds 128" in err


@pytest.mark.parametrize("vocab", ['{"a": ', "[1, 2]", '{"a": -1}', "[" * 100_000])
def test_critique_cli_names_a_corrupt_vocab_json_in_one_line(tmp_path, capsys, vocab):
    tok, weights, images = write_tiny_release(tmp_path)
    (tok / "vocab.json").write_text(vocab)
    assert critique_cli().main(["--weights", str(weights), "--tokenizer", str(tok), str(images[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tok / 'vocab.json'}: ")


@pytest.mark.parametrize("option", [["--beam-size", "0"], ["--max-steps", "-1"], ["--batch-size", "0"], ["--beam-size", "x"]])
def test_critique_cli_refuses_sizes_below_one_before_loading_anything(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        critique_cli().main(["--weights", str(tmp_path), "--tokenizer", str(tmp_path), "a.jpg", *option])
    assert exit_info.value.code == 2
    assert f"argument {option[0]}:" in capsys.readouterr().err


def test_critique_cli_checks_its_csv_output_before_decoding(tmp_path, capsys):
    tok, weights, images = write_tiny_release(tmp_path)
    base = ["--weights", str(weights), "--tokenizer", str(tok), *map(str, images)]
    for out, reason in ((tmp_path, "is a folder"), (images[0], "is one of the input images"),
                        (tmp_path / "no" / "x.csv", "missing")):  # fmt: skip
        assert critique_cli().main([*base, "--csv", str(out)]) == 2
        assert reason in capsys.readouterr().err
    assert images[0].read_bytes()[:4] == b"\x89PNG"
