"""The released fusion head: the model's forward equals a straight re-computation of
mtpg_official.md steps 1-6, keeps the released batch dependence, and caches the level
prompt features once per set of text weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg
from mtpg_aiaa.models.mtpg.prompts import level_prompts
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

DESCRIPTIONS = [
    "a cat asleep on a windowsill",
    "an oil painting of a stormy sea with a small boat fighting the waves under dark clouds "
    "while gulls circle overhead and lightning strikes the distant cliffs",
    "portrait of an old man",
    "a red house in a green field",
    "abstract shapes in blue and yellow with thick impasto",
]
FUSION_STD = 0.1


def _model(seed: int = 0, prompts: str = "official"):
    torch.manual_seed(seed)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", prompts=prompts)).eval()
    with torch.no_grad():
        for parameter in model.fusion.parameters():
            parameter.normal_(std=FUSION_STD)
        model.logit_scale.fill_(2.5)
    return model


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(100)
    images = torch.randn(len(DESCRIPTIONS), 3, 224, 224)
    return images, get_tokenizer()(DESCRIPTIONS)


# -- an independent re-computation of mtpg_official.md -----------------------------------
def reference_forward(state: dict, image: torch.Tensor, text: torch.Tensor, prompt: torch.Tensor):
    """Steps 2-6 in float64 from raw state-dict tensors. ``image``/``text`` ``[B, D]`` and
    ``prompt`` ``[5, D]`` are the l2-normalised features of step 1."""
    s = {k: v.double() for k, v in state.items()}
    I, T, P = image.double(), text.double(), prompt.double()

    def lin(name, x):
        return x @ s[f"fusion.{name}.weight"].T + s[f"fusion.{name}.bias"]

    def pool(x):  # average of neighbouring feature pairs
        return (x[:, 0::2] + x[:, 1::2]) / 2

    # 2. cross step, products over the batch axis, no softmax, no scaling
    T1 = lin("fc1", torch.cat([T, (lin("query_text", T) @ lin("key_image", I).T) @ lin("value_image", I)], dim=1))
    I1 = lin("fc2", torch.cat([I, (lin("query_text", I) @ lin("key_image", T).T) @ lin("value_image", T)], dim=1))
    # 3. gated self step
    qt, kt, vt = lin("query_text_s", T1), lin("key_text_s", T1), lin("value_text_s", T1)
    qi, ki, vi = lin("query_image_s", I1), lin("key_image_s", I1), lin("value_image_s", I1)
    g_t = torch.sigmoid(lin("exband1", pool((qt @ kt.T) @ vt)))
    g_i = torch.sigmoid(lin("exband2", pool((qi @ ki.T) @ vi)))
    T2 = lin("fc4", (((1 + g_i) * qt) @ ((1 + g_i) * kt).T) @ vt)
    I2 = lin("fc3", (((1 + g_t) * qi) @ ((1 + g_t) * ki).T) @ vi)
    # 4. gated residual, text first, not re-normalised
    r = lin("mlp", torch.cat([T2, I2], dim=1))
    z = torch.sigmoid(r)
    fused = (1 - z) * I + z * r
    # 5. level probabilities with the head's own temperature
    probs = torch.softmax(torch.exp(s["logit_scale"]) * fused @ P.T, dim=1)
    # 6. expected level on 0-1
    score = probs @ torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    return probs, score


def _features(model, images, tokens):
    with torch.no_grad():
        image = model.encode_images(images)
        text = model.encode_texts(tokens)
        prompt_tokens = get_tokenizer()(level_prompts("official"))
        prompt = F.normalize(model.backbone.encode_text(prompt_tokens), dim=-1)
    return image, text, prompt


def test_forward_matches_reference(model, batch):
    images, tokens = batch
    image, text, prompt = _features(model, images, tokens)
    # step 1: features are l2-normalised fp32
    for feature in (image, text, prompt):
        assert feature.dtype == torch.float32
        torch.testing.assert_close(feature.norm(dim=-1), torch.ones(len(feature)))
    assert prompt.shape == (5, model.backbone.embed_dim)
    torch.testing.assert_close(model.prompt_features(), prompt, atol=1e-6, rtol=0)

    with torch.no_grad():
        out = model.score_tensors(images, tokens)
    probs, score = reference_forward(model.state_dict(), image, text, prompt)

    assert out["probs"].shape == (5, 5) and out["score"].shape == (5,) and out["logits"].shape == (5, 5)
    torch.testing.assert_close(out["probs"].double(), probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["score"].double(), score, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["probs"], out["logits"].softmax(dim=-1))

    # The comparison is informative: probabilities are neither uniform nor one-hot and
    # the samples get different scores.
    assert 0.25 < float(probs.max()) < 0.99
    assert float(score.std()) > 1e-3


def test_reference_is_sensitive_to_the_documented_details(model, batch):
    # Variants a faithful implementation must NOT match (guards against a vacuous reference).
    images, tokens = batch
    image, text, prompt = _features(model, images, tokens)
    state = model.state_dict()
    probs, _ = reference_forward(state, image, text, prompt)
    swapped = {**state, "fusion.fc3.weight": state["fusion.fc4.weight"], "fusion.fc4.weight": state["fusion.fc3.weight"]}
    assert (reference_forward(swapped, image, text, prompt)[0] - probs).abs().max() > 1e-4
    clean_prompt = F.normalize(model.backbone.encode_text(get_tokenizer()(level_prompts("clean"))), dim=-1).detach()
    assert (reference_forward(state, image, text, clean_prompt)[0] - probs).abs().max() > 1e-4


def test_model_uses_official_prompts(model):
    assert torch.equal(model.prompt_tokens, get_tokenizer()(level_prompts("official")))
    clean = _model(prompts="clean")
    assert torch.equal(clean.prompt_tokens, get_tokenizer()(level_prompts("clean")))


# -- batch dependence (released behaviour) -----------------------------------------------
def test_sample_score_depends_on_the_rest_of_the_batch(model, batch):
    images, tokens = batch
    with torch.no_grad():
        full = model.score_tensors(images, tokens)["score"]
        others = images.clone()
        others[1:] = torch.randn_like(others[1:])
        changed = model.score_tensors(others, tokens)["score"]
        alone = torch.stack([model.score_tensors(images[i : i + 1], tokens[i : i + 1])["score"][0] for i in range(5)])
        alone_again = model.score_tensors(images[:1], tokens[:1])["score"]
    assert torch.equal(others[0], images[0])
    assert abs(float(changed[0] - full[0])) > 1e-6
    assert (alone - full).abs().max() > 1e-6
    assert torch.equal(alone_again[0], alone[0])


def test_batch_of_one_matches_reference(model, batch):
    images, tokens = batch
    image, text, prompt = _features(model, images[2:3], tokens[2:3])
    with torch.no_grad():
        out = model.score_tensors(images[2:3], tokens[2:3])
    probs, score = reference_forward(model.state_dict(), image, text, prompt)
    torch.testing.assert_close(out["score"].double(), score, atol=1e-5, rtol=0)


# -- prompt feature cache ----------------------------------------------------------------
class _CountPromptEncodes:
    """Wraps ``model.encode_texts`` and counts the calls made with the prompt tokens."""

    def __init__(self, model):
        self.model = model
        self.original = model.encode_texts
        self.prompt_calls = 0
        self.all_calls = 0

    def __call__(self, tokens, *args, **kwargs):
        self.all_calls += 1
        prompt = self.model.prompt_tokens
        if tokens.shape[0] == prompt.shape[0] and torch.equal(tokens, prompt[:, : tokens.shape[1]]):
            self.prompt_calls += 1
        return self.original(tokens, *args, **kwargs)


@pytest.fixture
def counted():
    model = _model(seed=1)
    counter = _CountPromptEncodes(model)
    model.encode_texts = counter  # instance attribute shadows the method
    return model, counter


def _forward_batch(seed: int = 0):
    torch.manual_seed(seed)
    return torch.randn(3, 3, 224, 224), get_tokenizer()(DESCRIPTIONS[:3])


def test_prompt_features_computed_once_without_grad(counted):
    model, counter = counted
    images, tokens = _forward_batch()
    with torch.no_grad():
        first = model.score_tensors(images, tokens)
        for _ in range(3):
            again = model.score_tensors(images, tokens)
        cached = model.prompt_features()
    assert counter.all_calls == 4 + 1  # four description batches, one prompt batch
    assert torch.equal(first["score"], again["score"])
    assert not cached.requires_grad
    assert counter.prompt_calls == 1


def test_prompt_cache_is_kept_apart_per_autocast_state(counted):
    """Features a bf16 training step computed are not served to an fp32 validation pass
    (nor back): CPU autocast stands in for CUDA's."""
    model, counter = counted
    with torch.no_grad():
        fp32 = model.prompt_features().clone()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model.prompt_features().clone()
            model.prompt_features()
        again = model.prompt_features()
    assert counter.prompt_calls == 3  # fp32, bf16, fp32 again: one entry is kept
    assert (bf16 - fp32).abs().max() > 1e-4  # bf16 rounding shows: serving one for the other is visible
    torch.testing.assert_close(again, fp32, atol=0, rtol=0)


def test_prompt_cache_invalidated_by_load_state_dict(counted):
    model, counter = counted
    with torch.no_grad():
        before = model.prompt_features().clone()
    other = _model(seed=2)
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        after = model.prompt_features()
        model.prompt_features()
    assert counter.prompt_calls == 2
    assert (after - before).abs().max() > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(after, other.prompt_features(), atol=1e-6, rtol=0)


def test_prompt_cache_invalidated_by_in_place_change(counted):
    model, counter = counted
    with torch.no_grad():
        model.prompt_features()
        model.backbone.text_projection.add_(1)
        model.prompt_features()
        model.prompt_features()
    assert counter.prompt_calls == 2
    # (+1 on every entry leaves these features almost unchanged: ln_final's output has
    # zero mean. Check the recomputed values with a change that matters.)
    with torch.no_grad():
        before = model.prompt_features().clone()
        model.backbone.text_projection.add_(torch.randn_like(model.backbone.text_projection))
        after = model.prompt_features()
    assert counter.prompt_calls == 3
    assert (after - before).abs().max() > 1e-2
    with torch.no_grad():
        fresh = F.normalize(counter.original(model.prompt_tokens), dim=-1)
    torch.testing.assert_close(after, fresh, atol=1e-6, rtol=0)


def test_prompt_cache_invalidated_by_ln_final_change(counted):
    model, counter = counted
    with torch.no_grad():
        model.prompt_features()
        model.backbone.ln_final.bias.add_(0.5)
        model.prompt_features()
    assert counter.prompt_calls == 2


def test_prompt_features_recomputed_when_text_tower_trains(counted):
    model, counter = counted
    assert torch.is_grad_enabled()
    assert model.backbone.text_projection.requires_grad
    features = [model.prompt_features() for _ in range(3)]
    assert counter.prompt_calls == 3
    assert all(f.requires_grad for f in features)
    features[0].sum().backward()
    assert model.backbone.text_projection.grad is not None


def test_prompt_features_cached_when_text_tower_frozen(counted):
    model, counter = counted
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    for _ in range(3):
        model.prompt_features()
    assert counter.prompt_calls == 1


def test_prompt_cache_from_inference_mode_usable_in_training(counted):
    model, _ = counted
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    images, tokens = _forward_batch()
    with torch.inference_mode():
        model.score_tensors(images, tokens)  # e.g. an evaluation pass (mtpg_aiaa.eval.predict uses inference_mode)
    model.train()
    model.score_tensors(images, tokens)["score"].sum().backward()
    assert model.fusion.fc1.weight.grad is not None
