"""The fused attention path (``backbone/attention.py``): one SDPA call per block, the text
tower with ``is_causal=True`` instead of the release's float mask.

On the CPU the default (``auto``) must stay open_clip's path bit for bit (the published CPU
figures come from it); the fused path must match it within 1e-5 in fp32 for every encoder
output other code reads, with padded descriptions of mixed length pooled at their EOT.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

import mtpg_aiaa.backbone.attention as attention
from mtpg_aiaa.backbone.attention import FusedAttentionBlock, set_attention
from mtpg_aiaa.backbone.convert import cast_like_upstream
from mtpg_aiaa.backbone.longclip import create_longclip, trim_text_tokens
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

EOTS = (4, 11, 29, 60)


def _tokens(length: int = 248) -> torch.Tensor:
    """Zero-padded descriptions ending with EOT at ``EOTS`` (mixed lengths, as a real batch)."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(len(EOTS), length, dtype=torch.long)
    tokens[:, 0] = 49406
    for row, eot in enumerate(EOTS):
        tokens[row, 1:eot] = torch.randint(1, 49000, (eot - 1,), generator=generator)
        tokens[row, eot] = 49407
    return tokens


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_longclip("LongCLIP-tiny").eval()


def _images(model, rows: int = 2) -> torch.Tensor:
    return torch.randn(rows, 3, model.arch.image_size, model.arch.image_size, generator=torch.Generator().manual_seed(2))


def _outputs(model, tokens: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every encoder output the models and tasks read."""
    with torch.no_grad():
        pooled, states = model.encode_text_with_tokens(tokens)
        stat_pooled, stat_states, text_statistics = model.encode_text_with_layer_statistics(tokens)
        image_pooled, patches = model.encode_image_with_tokens(images)
        *_, image_statistics = model.encode_image_with_layer_statistics(images)
        embeddings = model.token_embedding(tokens)
        return {
            "encode_text": model.encode_text(tokens), "encode_text_with_tokens.pooled": pooled,
            "encode_text_with_tokens.states": states, "statistics.pooled": stat_pooled,
            "statistics.states": stat_states, "statistics.text": text_statistics,
            "text_states": model.text_states(embeddings),
            "encode_text_embeddings": model.encode_text_embeddings(embeddings, tokens.argmax(dim=-1)),
            "encode_image": model.encode_image(images), "encode_image_with_tokens.pooled": image_pooled,
            "encode_image_with_tokens.patches": patches, "statistics.image": image_statistics,
        }  # fmt: skip


def _release_blocks(model):
    """A copy of ``model`` with open_clip's own block class: the release path, untouched."""
    reference = copy.deepcopy(model)
    for block in reference.modules():
        if isinstance(block, FusedAttentionBlock):
            block.__class__ = ResidualAttentionBlock
    assert not any(isinstance(m, FusedAttentionBlock) for m in reference.modules())
    return reference


@pytest.fixture
def fused_calls(monkeypatch):
    """Record each fused call's ``is_causal`` (the fused path is really taken, or not)."""
    calls = []
    original = attention.fused_self_attention

    def spy(attn, x, is_causal):
        calls.append(is_causal)
        return original(attn, x, is_causal)

    monkeypatch.setattr(attention, "fused_self_attention", spy)
    return calls


def test_every_block_is_fused_capable_and_text_blocks_are_causal(model):
    assert model.attention == "auto"
    assert all(isinstance(b, FusedAttentionBlock) and b.causal for b in model.transformer.resblocks)
    assert all(isinstance(b, FusedAttentionBlock) and not b.causal for b in model.visual.transformer.resblocks)
    assert list(model.state_dict()) == list(_release_blocks(model).state_dict())  # same keys, same files


def test_default_on_cpu_is_the_release_path_bit_for_bit(model, fused_calls):
    tokens, images = _tokens(), _images(model)
    got = _outputs(model, tokens, images)
    assert fused_calls == []  # auto on the CPU never takes the fused call
    expected = _outputs(_release_blocks(model), tokens, images)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.parametrize("trim", [False, True], ids=["padded_248", "trimmed"])
def test_fused_path_matches_the_release_path_in_fp32(model, fused_calls, trim):
    tokens, images = _tokens(), _images(model)
    tokens = trim_text_tokens(tokens) if trim else tokens
    expected = _outputs(model, tokens, images)
    fused = copy.deepcopy(model)
    fused.attention = "sdpa"
    got = _outputs(fused, tokens, images)
    assert True in fused_calls and False in fused_calls  # both towers took the fused call
    for name in expected:
        assert got[name].shape == expected[name].shape, name
        assert (got[name] - expected[name]).abs().max() <= 1e-5, name


def test_causal_masking_alone_gives_the_release_outputs_at_the_eot(model):
    """The release's mask is purely causal: ``is_causal=True`` pools the same EOT states from
    248-token padded rows as the float mask, and as the rows cut after their own EOT. Without
    the causal flag the EOT states change (the padding after a short row's EOT reaches it),
    so this comparison can fail."""
    tokens = _tokens()
    fused = copy.deepcopy(model)
    fused.attention = "sdpa"
    with torch.no_grad():
        release = model.encode_text(tokens)
        padded = fused.encode_text(tokens)
        alone = torch.cat([fused.encode_text(tokens[row : row + 1, : eot + 1]) for row, eot in enumerate(EOTS)])
    assert (padded - release).abs().max() <= 1e-5
    assert (alone - release).abs().max() <= 1e-5
    for block in fused.transformer.resblocks:
        block.causal = False  # attend both ways: what a wrong mask would do
    with torch.no_grad():
        bidirectional = fused.transformer(fused._text_input(fused.token_embedding(tokens))[0])
        pooled = fused.ln_final(bidirectional)[torch.arange(len(EOTS)), tokens.argmax(dim=-1)] @ fused.text_projection
    assert (pooled - release).abs().max() > 1e-3


def test_fused_text_attention_calls_sdpa_with_is_causal_and_no_mask(model, monkeypatch):
    seen = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        seen.append((attn_mask is None, is_causal, tuple(q.shape)))
        return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    fused = copy.deepcopy(model)
    fused.attention = "sdpa"
    with torch.no_grad():
        fused.encode_text(_tokens(64))
    heads = model.arch.text_width // 64
    assert seen == [(True, True, (len(EOTS), heads, 64, 64))] * model.arch.text_layers


def test_fused_path_trains_with_the_release_gradients(model):
    tokens, images = trim_text_tokens(_tokens()), _images(model)
    gradients = {}
    for mode in ("module", "sdpa"):
        copy_ = copy.deepcopy(model).train()
        copy_.attention = mode
        loss = copy_.encode_text(tokens).square().sum() + copy_.encode_image(images).square().sum()
        loss.backward()
        gradients[mode] = {name: p.grad for name, p in copy_.named_parameters() if p.grad is not None}
    assert gradients["sdpa"].keys() == gradients["module"].keys() and gradients["sdpa"]
    for name, grad in gradients["module"].items():
        assert (gradients["sdpa"][name] - grad).abs().max() <= 1e-5 * max(1.0, grad.abs().max().item()), name


def test_fused_path_runs_the_fp16_cast_backbone(model):
    """The authors' fp16 protocol (``cast_like_upstream``, LayerNormFp32) through the fused
    call: half weights and activations, within fp16 tolerance of fp32."""
    tokens, images = _tokens(), _images(model)
    with torch.no_grad():
        reference = (model.encode_text(tokens), model.encode_image(images))
        half = cast_like_upstream(copy.deepcopy(model))
        half.attention = "sdpa"
        got = (half.encode_text(tokens), half.encode_image(images.half()))
    assert half.visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    for ref, out in zip(reference, got):
        assert out.float().sub(ref).abs().max() <= 2e-2 * ref.abs().max()


@pytest.mark.parametrize("fusion", ["official", "token"])
def test_scorer_outputs_match_across_attention_modes(fusion):
    torch.manual_seed(0)
    scorer = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion=fusion)).eval()
    images, tokens = _images(scorer.backbone, rows=4), _tokens()
    with torch.no_grad():
        expected = scorer.score_tensors(images, tokens)["score"]
        set_attention(scorer, "sdpa")
        got = scorer.score_tensors(images, tokens)["score"]
    assert scorer.backbone.attention == "sdpa"
    assert (got - expected).abs().max() <= 1e-5


def test_unknown_attention_mode_is_refused(model):
    with pytest.raises(ValueError, match="attention must be one of"):
        create_longclip("LongCLIP-tiny", attention="flash")
    with pytest.raises(ValueError, match="attention must be one of"):
        set_attention(copy.deepcopy(model), "fast")
