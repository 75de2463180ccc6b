"""fusion=token (ours) and fusion=none: per-sample predictions, token features, padding."""
from __future__ import annotations

import copy

import pytest
import torch

from mtpg_aiaa.backbone.longclip import create_longclip
from mtpg_aiaa.models.mtpg.fusion.token import token_statistics
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg


FUSION_OPTIONS = {
    "attention": {},
    "attention+statistics": {"token_statistics": True},
    "attention+layer-statistics": {"layer_statistics": True},
    "attention+description-statistics": {"description_statistics": True},
}


@pytest.fixture(scope="module", params=list(FUSION_OPTIONS))
def token_model(request):
    torch.manual_seed(0)
    extra = {"fusion": FUSION_OPTIONS[request.param]}
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="token", prompts="clean", extra=extra)).eval()
    with torch.no_grad():  # larger head weights so scores differ visibly between inputs,
        for p in model.fusion.parameters():  # scaled by fan-in so the two-layer mlp does not saturate
            if p.dim() > 1:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
    return model


def _batch(model, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    words = ["warm", "cold", "balanced", "blurry", "crisp", "harmonious", "clashing", "grainy"]
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (int(k),), generator=g))
             for k in torch.randint(1, 12, (n,), generator=g)]  # fmt: skip
    return torch.randn(n, 3, 224, 224, generator=g), model.tokenizer(texts)


def test_token_fusion_prediction_ignores_the_rest_of_the_batch(token_model):
    images, tokens = _batch(token_model, 5, seed=1)
    other_images, other_tokens = _batch(token_model, 5, seed=2)
    with torch.no_grad():
        full = token_model.score_tensors(images, tokens)["score"]
        mixed = token_model.score_tensors(torch.cat([images[:1], other_images[1:]]), torch.cat([tokens[:1], other_tokens[1:]]))["score"]
        alone = token_model.score_tensors(images[:1], tokens[:1])["score"]
        bigger = token_model.score_tensors(torch.cat([images, other_images]), torch.cat([tokens, other_tokens]))["score"]
    assert mixed[0] == pytest.approx(full[0].item(), abs=1e-6)
    assert alone[0] == pytest.approx(full[0].item(), abs=1e-6)
    assert bigger[:5] == pytest.approx(full.tolist(), abs=1e-6)
    assert full.std() > 1e-4, "scores should differ between samples"


def test_description_changes_the_token_fusion_score(token_model):
    images, _ = _batch(token_model, 1, seed=3)
    with torch.no_grad():
        a = token_model.score_tensors(images, token_model.tokenizer(["a harmonious balanced painting"]))["score"]
        b = token_model.score_tensors(images, token_model.tokenizer(["grainy clashing colours piled on the left"]))["score"]
    assert abs(a.item() - b.item()) > 1e-5


def test_padding_after_eot_is_masked(token_model):
    images, tokens = _batch(token_model, 2, seed=4)
    features = token_model.encode(images, tokens)
    eot = tokens[:, : features["text_tokens"].shape[1]].argmax(dim=-1)
    for row, position in enumerate(eot.tolist()):
        assert not features["text_padding"][row, : position + 1].any()
        assert features["text_padding"][row, position + 1 :].all()


def test_pooled_token_features_match_the_plain_encoders():
    torch.manual_seed(0)
    backbone = create_longclip("LongCLIP-tiny").eval()
    images = torch.randn(2, 3, 224, 224)
    tokens = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"), backbone).tokenizer(["a cat", "two dogs on a sofa"])
    with torch.no_grad():
        pooled_image, patches = backbone.encode_image_with_tokens(images)
        pooled_text, states = backbone.encode_text_with_tokens(tokens)
        assert torch.allclose(pooled_image, backbone.encode_image(images), atol=1e-6)
        assert torch.allclose(pooled_text, backbone.encode_text(tokens), atol=1e-6)
    assert patches.shape == (2, 49, 64) and states.shape == (2, 248, 64)


def test_token_fusion_trains_end_to_end(token_model):
    model = copy.deepcopy(token_model).train()  # each fusion option in turn
    images, tokens = _batch(model, 3, seed=5)
    model.score_tensors(images, tokens)["score"].sum().backward()
    for name, parameter in model.fusion.named_parameters():  # every part of this option's head learns
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    expected_projections = {key for key, on in (("image_layer_statistics", "layer_statistics"),
                                                 ("text_layer_statistics", "description_statistics"))
                            if token_model.config.extra["fusion"].get(on)}  # fmt: skip
    assert set(model.fusion.statistics) == expected_projections
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.token_embedding.weight.grad.abs().sum() > 0


def test_image_only_ablation_ignores_descriptions():
    torch.manual_seed(0)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="none")).eval()
    images, tokens = _batch(model, 2, seed=6)
    with torch.no_grad():
        a = model.score_tensors(images, tokens)["score"]
        b = model.score_tensors(images, model.tokenizer(["", ""]))["score"]
        assert torch.equal(a, b)
        assert torch.allclose(model.score_tensors(images, tokens)["fused"], model.encode_images(images))


def test_unknown_fusion_is_rejected():
    with pytest.raises(ValueError, match="unknown fusion"):
        build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="attention"))


def test_token_statistics_ignore_description_padding():
    g = torch.Generator().manual_seed(5)
    image_tokens, text_tokens = torch.randn(2, 9, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    padding = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    changed = text_tokens.clone()
    changed[0, 4:] = 100.0  # padding positions only
    before, after = token_statistics(image_tokens, text_tokens, padding), token_statistics(image_tokens, changed, padding)
    for a, b in zip(before, after):
        assert torch.allclose(a, b)
    assert torch.allclose(before[2][0], text_tokens[0, :4].mean(0))
    assert torch.allclose(before[1], image_tokens.std(1))


def test_layer_statistics_are_pooled_block_outputs():
    torch.manual_seed(1)
    backbone = create_longclip("LongCLIP-tiny").eval()
    images = torch.randn(2, 3, 224, 224)
    outputs = {}
    hooks = [block.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
             for k, block in enumerate(backbone.visual.transformer.resblocks)]  # fmt: skip
    with torch.no_grad():
        pooled, tokens = backbone.encode_image_with_tokens(images)
        pooled_2, tokens_2, statistics = backbone.encode_image_with_layer_statistics(images)
    for hook in hooks:
        hook.remove()
    assert torch.allclose(pooled, pooled_2, atol=1e-6) and torch.allclose(tokens, tokens_2, atol=1e-6)
    layers, width = backbone.arch.vision_layers, backbone.arch.vision_width
    assert statistics.shape == (2, layers + 1, 2, width)
    last = outputs[layers - 1][:, 1:]  # patch tokens of the last block, class token left out
    assert torch.allclose(statistics[:, -1, 0], last.mean(1), atol=1e-5)
    assert torch.allclose(statistics[:, -1, 1], last.std(1), atol=1e-5)


def test_description_statistics_are_token_means_up_to_the_eot():
    torch.manual_seed(2)
    backbone = create_longclip("LongCLIP-tiny").eval()
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="token", prompts="clean"), backbone)
    tokens = model.tokenizer(["a balanced harmonious painting with crisp details", "grainy"])[:, :12]
    outputs = {}
    hooks = [block.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o))
             for k, block in enumerate(backbone.transformer.resblocks)]  # fmt: skip
    with torch.no_grad():
        pooled, states = backbone.encode_text_with_tokens(tokens)
        pooled_2, states_2, statistics = backbone.encode_text_with_layer_statistics(tokens)
        padded = backbone.encode_text_with_layer_statistics(torch.nn.functional.pad(tokens, (0, 20)))[2]
    for hook in hooks:
        hook.remove()
    assert torch.allclose(pooled, pooled_2, atol=1e-6) and torch.allclose(states, states_2, atol=1e-6)
    layers, width = backbone.arch.text_layers, backbone.arch.text_width
    assert statistics.shape == (2, layers + 1, width)
    eot = int(tokens[1].argmax())  # the short description: padding after its EOT is left out
    embedded = backbone.token_embedding(tokens[1, : eot + 1]) + backbone.positional_embedding[: eot + 1]
    assert torch.allclose(statistics[1, 0], embedded.mean(0), atol=1e-5)
    assert torch.allclose(statistics[1, -1], outputs[layers - 1][1, : eot + 1].mean(0), atol=1e-5)
    assert torch.allclose(padded, statistics, atol=1e-5), "trailing padding must not change the statistics"


def test_description_statistics_reach_the_score_standardised():
    torch.manual_seed(3)
    extra = {"fusion": {"num_heads": 4, "description_statistics": True}}
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="token", prompts="clean", extra=extra)).eval()
    images, tokens = _batch(model, 3, seed=4)
    with torch.no_grad():
        features = model.encode(images, tokens)
        base = model.score_features(features)["fused"]
        statistics = model.fusion.statistics["text_layer_statistics"]
        moved = dict(features, text_layer_statistics=features["text_layer_statistics"] + 1.0)
        assert not torch.allclose(model.score_features(moved)["fused"], base), "the statistics must reach the output"
        statistics.fit(features["text_layer_statistics"])  # standardised: a shifted fit undoes the shift
        fitted = model.score_features(features)["fused"]
        statistics.mean.add_(1.0)
        torch.testing.assert_close(model.score_features(moved)["fused"], fitted)
    with pytest.raises(ValueError, match="text_layer_statistics"):
        model.fuse({key: value for key, value in features.items() if key != "text_layer_statistics"})
