"""Learnable prompt context (CoOp): equal to the fixed prompts at initialisation, trainable, saved."""
from __future__ import annotations

import pytest
import torch

from mtpg_aiaa.models.mtpg.checkpoint import load_model, save_model
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg
from mtpg_aiaa.models.mtpg.prompt_context import INIT_PHRASE
from mtpg_aiaa.backbone.tokenizer import get_tokenizer


def _model(seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="none", prompts="clean", **config)).eval()


def test_context_initialised_from_the_phrase_equals_the_fixed_prompts():
    # "An image with" is three tokens, so a 3-vector context starts as exactly those
    # embeddings and the five prompts are the clean ones.
    assert get_tokenizer().token_count(INIT_PHRASE) == 3 + 2
    fixed, learned = _model(), _model(prompt_context=3)
    learned.backbone.load_state_dict(fixed.backbone.state_dict())
    learned.prompt_context.__init__(learned.backbone.token_embedding, learned.tokenizer, 3)
    with torch.no_grad():
        torch.testing.assert_close(learned.prompt_features(), fixed.prompt_features(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("per_level", [False, True])
def test_gradients_reach_the_context_and_move_the_prompt_features(per_level):
    model = _model(prompt_context=4, prompt_context_per_level=per_level)
    vectors = model.prompt_context.vectors
    assert vectors.shape == ((5, 4, 64) if per_level else (4, 64))
    before = model.prompt_features().detach().clone()
    model.backbone.requires_grad_(False)  # CoOp proper: the towers frozen, the context learns
    images = torch.randn(2, 3, 224, 224)
    model.score_tensors(images, model.tokenizer(["", ""]))["score"].sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    with torch.no_grad():
        vectors.add_(torch.randn_like(vectors))
    assert not torch.allclose(model.prompt_features(), before)  # the cache saw the in-place step


def test_context_is_saved_with_the_model(tmp_path):
    model = _model(prompt_context=2, prompt_context_per_level=True)
    with torch.no_grad():
        model.prompt_context.vectors.normal_()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path).eval()
    assert loaded.config.prompt_context == 2 and loaded.config.prompt_context_per_level
    torch.testing.assert_close(loaded.prompt_context.vectors, model.prompt_context.vectors)
    with torch.no_grad():
        torch.testing.assert_close(loaded.prompt_features(), model.prompt_features())


def test_fixed_prompt_switch_is_refused_when_the_context_is_learned():
    with pytest.raises(ValueError, match="learns its prompt context"):
        _model(prompt_context=2).set_prompts("official")
