"""Long-CLIP backbone: release-layout loading (the two positional tables), architecture
inference, knowledge-preserved stretching, exact trimming, precision and load errors.

The text forward is checked against a straight re-computation written here with plain
torch ops in float64, so an error in the positional merge, the mask, the head split or
the pooling shows up as a numeric mismatch.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from mtpg_aiaa.backbone import (
    CheckpointError,
    LongCLIP,
    LongCLIPArch,
    create_longclip,
    get_arch,
    infer_arch,
    load_longclip,
    stretch_positional_embedding,
    to_release_layout,
    trim_text_tokens,
)
from mtpg_aiaa.backbone.longclip import count_parameters
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

TINY = "LongCLIP-tiny"
# Two text heads (width 128 // 64), so the per-head split of the attention is exercised.
TWO_HEADS = LongCLIPArch(
    embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, text_width=128, text_layers=2
)
TEXTS = [
    "a photo of a cat",
    # > 20 tokens, so the EOT row depends on positions taken from positional_embedding_res
    "an oil painting of a quiet harbour at dusk with small fishing boats, warm lantern light "
    "reflected on dark water, and a lighthouse on the far rocky shore under a cloudy sky",
    "",
    " ".join(["bold expressive brushstrokes"] * 20),
]


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return get_tokenizer()(TEXTS)


def _release_state_dict(arch: str | LongCLIPArch, seed: int = 0):
    """A random model's state dict in the official release layout, with distinct
    ``positional_embedding`` and ``positional_embedding_res`` and non-trivial LN/biases."""
    torch.manual_seed(seed)
    sd = {k: v.clone() for k, v in create_longclip(arch).state_dict().items()}
    rows, width = sd["positional_embedding"].shape
    pos = torch.randn(rows, width) * 0.5
    res = torch.randn(rows, width) * 0.5
    for key in list(sd):
        if key.endswith(".bias") or "ln_" in key:
            base = 1.0 if key.endswith("weight") else 0.0
            sd[key] = base + 0.1 * torch.randn_like(sd[key])
    sd["positional_embedding"] = pos
    sd["positional_embedding_res"] = res
    return sd


# -- an independent text forward ---------------------------------------------------------
def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reference_encode_text(
    sd: dict, table: torch.Tensor, tokens: torch.Tensor, heads: int | None = None
) -> torch.Tensor:
    """CLIP's text tower in float64 from raw state-dict tensors and one positional table."""
    g = {k: v.double() for k, v in sd.items() if k.startswith(("transformer.", "ln_final.", "text_projection"))}
    width = g["ln_final.weight"].shape[0]
    heads = heads or max(1, width // 64)
    head_dim = width // heads
    layers = len({k.split(".")[2] for k in g if k.startswith("transformer.resblocks.")})
    n, length = tokens.shape
    x = sd["token_embedding.weight"][tokens].double() + table.double()[:length]
    mask = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        h = _layer_norm(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"])
        qkv = h @ g[p + "attn.in_proj_weight"].T + g[p + "attn.in_proj_bias"]
        q, k, v = qkv.split(width, dim=-1)
        q, k, v = (t.reshape(n, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask, dim=-1)
        out = (att @ v).transpose(1, 2).reshape(n, length, width)
        x = x + out @ g[p + "attn.out_proj.weight"].T + g[p + "attn.out_proj.bias"]
        h = _layer_norm(x, g[p + "ln_2.weight"], g[p + "ln_2.bias"])
        h = h @ g[p + "mlp.c_fc.weight"].T + g[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ g[p + "mlp.c_proj.weight"].T + g[p + "mlp.c_proj.bias"]
    x = _layer_norm(x, g["ln_final.weight"], g["ln_final.bias"])
    eot = tokens.argmax(dim=-1)
    return x[torch.arange(n), eot] @ g["text_projection"]


# -- release layout ----------------------------------------------------------------------
@pytest.mark.parametrize("arch", [TINY, TWO_HEADS], ids=["tiny", "two-heads"])
def test_release_layout_merges_positional_tables(tmp_path, tokens, arch):
    sd = _release_state_dict(arch)
    pos, res = sd["positional_embedding"], sd["positional_embedding_res"]
    path = tmp_path / "longclip.pt"
    torch.save(sd, path)

    model = load_longclip(path)
    assert not model.training
    loaded = model.positional_embedding.detach()
    assert torch.equal(loaded[:20], pos[:20])
    assert torch.equal(loaded[20:], res[20:])

    merged = torch.cat([pos[:20], res[20:]])
    with torch.no_grad():
        ours = model.encode_text(tokens).double()
    expected = reference_encode_text(sd, merged, tokens)
    assert ours.shape == (len(TEXTS), model.embed_dim)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)

    # Dropping positional_embedding_res (instead of merging) must be caught by the check above.
    dropped = reference_encode_text(sd, pos, tokens)
    long_rows = (tokens.argmax(dim=-1) >= 20).nonzero().flatten()
    assert len(long_rows) >= 2
    assert (dropped[long_rows] - expected[long_rows]).abs().max() > 1e-2
    # ... while a short text (EOT before position 20) never sees the residual table.
    torch.testing.assert_close(dropped[0], expected[0], atol=1e-9, rtol=0)


def test_head_split_matters(tokens):
    # With two heads, a one-head computation is measurably different, so the 1e-5 match
    # above also checks that heads = width // 64.
    assert LongCLIP(TWO_HEADS).transformer.resblocks[0].attn.num_heads == 2
    assert create_longclip(TINY).transformer.resblocks[0].attn.num_heads == 1
    sd = _release_state_dict(TWO_HEADS)
    table = torch.cat([sd["positional_embedding"][:20], sd["positional_embedding_res"][20:]])
    two = reference_encode_text(sd, table, tokens)
    one = reference_encode_text(sd, table, tokens, heads=1)
    assert (two - one).abs().max() > 1e-3


def test_release_layout_round_trip(tmp_path, tokens):
    sd = _release_state_dict(TINY)
    torch.save(sd, tmp_path / "a.pt")
    first = load_longclip(tmp_path / "a.pt")
    release = to_release_layout(first.state_dict())
    assert set(release) == set(sd)
    torch.save(release, tmp_path / "b.pt")
    second = load_longclip(tmp_path / "b.pt")
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


# -- architecture inference --------------------------------------------------------------
def test_infer_arch_tiny():
    sd = create_longclip(TINY).state_dict()
    assert infer_arch(sd) == get_arch(TINY)
    assert infer_arch(to_release_layout(sd)) == get_arch(TINY)
    assert infer_arch(LongCLIP(TWO_HEADS).state_dict()) == TWO_HEADS


@pytest.mark.parametrize(
    "name, keys, params, embed, vision, text, visual_pos",
    [
        ("LongCLIP-B-16", 302, 149_835_265, 512, (768, 12, 16), (512, 12), (197, 768)),
        ("LongCLIP-L-14", 446, 427_938_305, 768, (1024, 24, 14), (768, 12), (257, 1024)),
    ],
)
def test_real_architectures(name, keys, params, embed, vision, text, visual_pos):
    arch = get_arch(name)
    with torch.device("meta"):
        model = LongCLIP(arch)
    sd = model.state_dict()
    assert len(sd) == keys
    release = to_release_layout(sd)
    assert len(release) == keys + 1
    assert release["positional_embedding_res"].shape == (248, text[0])
    # The release holds the model's parameters plus the second 248-row table.
    assert sum(v.numel() for v in release.values()) == params
    assert count_parameters(model) + 248 * text[0] == params

    assert infer_arch(sd) == arch
    assert infer_arch(release) == arch
    assert (arch.embed_dim, arch.vision_width, arch.vision_layers, arch.patch_size) == (embed, *vision)
    assert (arch.text_width, arch.text_layers, arch.context_length, arch.image_size) == (*text, 248, 224)
    assert tuple(sd["visual.positional_embedding"].shape) == visual_pos
    assert tuple(sd["token_embedding.weight"].shape) == (49408, text[0])
    assert tuple(sd["text_projection"].shape) == (text[0], embed)
    assert sd["logit_scale"].shape == ()
    assert "visual.conv1.bias" not in sd
    assert model.transformer.resblocks[0].attn.num_heads == text[0] // 64
    assert model.visual.transformer.resblocks[0].attn.num_heads == vision[0] // 64


# -- knowledge-preserved stretching ------------------------------------------------------
def _stretch_by_loops(old: torch.Tensor) -> torch.Tensor:
    new = torch.zeros(248, old.shape[1], dtype=old.dtype)
    for j in range(20):
        new[j] = old[j]
    for i in range(56):
        for k in range(4):
            new[20 + 4 * i + k] = ((4 - k) * old[20 + i] + k * old[21 + i]) / 4
    for k in range(4):
        new[244 + k] = old[76] + k * (old[76] - old[75]) / 4
    return new


def test_stretch_matches_formula():
    torch.manual_seed(1)
    old = torch.randn(77, 24)
    new = stretch_positional_embedding(old)
    assert new.shape == (248, 24)
    assert new.dtype == torch.float32
    expected = _stretch_by_loops(old.double()).float()
    torch.testing.assert_close(new, expected, atol=1e-6, rtol=0)
    # a half table is interpolated and returned in half
    assert stretch_positional_embedding(old.half()).dtype == torch.float16
    # every fourth row from 20 on is an original row
    assert torch.equal(new[20:244:4], old[20:76])


def test_stretch_rejects_other_lengths():
    with pytest.raises(ValueError, match="77"):
        stretch_positional_embedding(torch.zeros(248, 8))


def test_openai_layout_is_stretched_to_248(tmp_path):
    torch.manual_seed(2)
    arch77 = dataclasses.replace(get_arch(TINY), context_length=77)
    sd = dict(create_longclip(arch77).state_dict())
    old = torch.randn(77, arch77.text_width)
    sd["positional_embedding"] = old
    assert "positional_embedding_res" not in sd
    sd["context_length"] = torch.tensor(77)  # non-parameter entries of OpenAI state dicts
    sd["input_resolution"] = torch.tensor(224)
    sd["vocab_size"] = torch.tensor(49408)
    torch.save(sd, tmp_path / "openai.pt")

    model = load_longclip(tmp_path / "openai.pt")
    assert model.context_length == 248
    assert model.arch == get_arch(TINY)
    torch.testing.assert_close(model.positional_embedding.detach(), _stretch_by_loops(old), atol=1e-6, rtol=0)
    tokens = get_tokenizer()([" ".join(["cat"] * 240)])
    with torch.no_grad():
        assert torch.isfinite(model.encode_text(tokens)).all()


# -- trimming ----------------------------------------------------------------------------
def test_trim_text_tokens_is_exact(tokens):
    torch.manual_seed(3)
    model = create_longclip(TINY).eval()
    with torch.no_grad():
        model.positional_embedding.normal_(std=0.5)
    lengths = [get_tokenizer().token_count(t) for t in TEXTS]
    trimmed = trim_text_tokens(tokens)
    assert trimmed.shape == (len(TEXTS), max(lengths))
    assert torch.equal(trimmed, tokens[:, : max(lengths)])
    with torch.no_grad():
        full, short = model.encode_text(tokens), model.encode_text(trimmed)
        one = model.encode_text(trim_text_tokens(tokens[:1]))
    assert trim_text_tokens(tokens[:1]).shape == (1, 7)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(one, full[:1], atol=1e-5, rtol=0)


def test_trim_empty_batch_and_overlong_input():
    empty = torch.zeros(0, 248, dtype=torch.long)
    assert trim_text_tokens(empty).shape == (0, 248)
    model = create_longclip(TINY)
    with pytest.raises(ValueError, match="249"):
        model.encode_text(torch.zeros(1, 249, dtype=torch.long))


# -- precision ---------------------------------------------------------------------------
def test_fp16_precision_casts_like_upstream(tmp_path):
    torch.save(_release_state_dict(TINY), tmp_path / "longclip.pt")
    model = load_longclip(tmp_path / "longclip.pt", precision="fp16")
    half, full = torch.float16, torch.float32
    n_linear = n_attn = n_norm = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            n_linear += 1
            assert module.weight.dtype == half, name
            if module.bias is not None:
                assert module.bias.dtype == half, name
        if isinstance(module, nn.MultiheadAttention):
            n_attn += 1
            assert module.in_proj_weight.dtype == half, name
            assert module.in_proj_bias.dtype == half, name
        if isinstance(module, nn.LayerNorm):
            n_norm += 1
            assert module.weight.dtype == full and module.bias.dtype == full, name
    assert n_attn == 4 and n_linear >= 13 and n_norm == 4 * 2 + 3
    assert model.visual.conv1.weight.dtype == half
    assert model.visual.proj.dtype == half
    assert model.text_projection.dtype == half
    assert model.positional_embedding.dtype == full
    assert model.token_embedding.weight.dtype == full
    assert model.logit_scale.dtype == full
    assert model.visual.class_embedding.dtype == full
    assert model.visual.positional_embedding.dtype == full

    assert all(p.dtype == full for p in load_longclip(tmp_path / "longclip.pt").parameters())
    with pytest.raises(ValueError, match="precision"):
        load_longclip(tmp_path / "longclip.pt", precision="bf8")


# -- errors ------------------------------------------------------------------------------
def test_error_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2), torch.ones(3)], path)
    with pytest.raises(CheckpointError, match="list.pt"):
        load_longclip(path)


def test_error_not_torch_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_longclip(path)


def test_error_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "longclip-L.pt"
    with pytest.raises(CheckpointError, match="longclip-L.pt") as info:
        load_longclip(path)
    assert "not found" in str(info.value)


@pytest.mark.parametrize("key", ["ln_final.weight", "transformer.resblocks.1.mlp.c_fc.bias", "visual.proj"])
def test_error_missing_key(tmp_path, key):
    sd = _release_state_dict(TINY)
    del sd[key]
    path = tmp_path / "missing_key.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_longclip(path)
    message = str(info.value)
    assert "missing_key.pt" in message and key in message


@pytest.mark.parametrize(
    "key, shape",
    [("transformer.resblocks.0.mlp.c_fc.weight", (256, 32)), ("visual.ln_post.bias", (63,))],
)
def test_error_wrong_shape(tmp_path, key, shape):
    sd = _release_state_dict(TINY)
    sd[key] = torch.zeros(shape)
    path = tmp_path / "wrong_shape.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_longclip(path)
    message = str(info.value)
    assert "wrong_shape.pt" in message and key in message
    assert str(shape) in message


def test_error_mismatched_positional_tables(tmp_path):
    sd = _release_state_dict(TINY)
    sd["positional_embedding_res"] = torch.zeros(77, 64)
    path = tmp_path / "bad_res.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="positional_embedding_res") as info:
        load_longclip(path)
    assert "bad_res.pt" in str(info.value)


def test_encode_text_by_length_equals_full_length_encoding():
    from mtpg_aiaa.backbone.longclip import encode_text_by_length
    from mtpg_aiaa.backbone.tokenizer import get_tokenizer

    torch.manual_seed(0)
    model = create_longclip("LongCLIP-tiny").eval()
    texts = [" ".join(["word"] * n) for n in (3, 120, 7, 60, 1, 200, 33, 90, 12, 5, 150)]
    tokens = get_tokenizer()(texts)
    with torch.no_grad():
        grouped = encode_text_by_length(model, tokens, group_size=3)
        full = model.encode_text(tokens)
    torch.testing.assert_close(grouped, full, atol=1e-5, rtol=0)
