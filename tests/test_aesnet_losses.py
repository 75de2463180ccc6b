"""AesNet's losses as pure functions: InfoNCE prefers matched pairs, rows without an
attribute are masked exactly, and both affinity readings behave as their formulas say."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtpg_aiaa.models.aesnet.losses import (
    attribute_info_nce,
    multi_attribute_info_nce,
    preserve_affinity_loss,
    restrain_affinity_loss,
    semantic_affinity_loss,
    symmetric_info_nce,
)

SCALE = torch.tensor(2.0)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_is_lower_for_matched_than_for_shuffled_pairs():
    image = unit(16, 32, seed=1)
    text = F.normalize(image + 0.3 * unit(16, 32, seed=2), dim=-1)  # each text near its own image
    shuffled = text[torch.randperm(16, generator=torch.Generator().manual_seed(3))]
    assert symmetric_info_nce(image, text, SCALE) < symmetric_info_nce(image, shuffled, SCALE) - 0.5


def test_info_nce_equals_the_two_cross_entropies_by_hand():
    image, text = unit(5, 8, seed=4), unit(5, 8, seed=5)
    logits = SCALE.exp() * image @ text.T
    by_hand = sum(-logits[i, i] + torch.logsumexp(logits[i], 0) for i in range(5)) / 5
    by_hand_t = sum(-logits[i, i] + torch.logsumexp(logits[:, i], 0) for i in range(5)) / 5
    assert torch.allclose(symmetric_info_nce(image, text, SCALE), (by_hand + by_hand_t) / 2, atol=1e-5)


def test_a_row_without_the_attribute_changes_nothing():
    image, text = unit(6, 8, seed=6), unit(6, 8, seed=7)
    present = torch.tensor([True, True, False, True, True, True])
    masked = attribute_info_nce(image, text, present, SCALE)
    assert torch.equal(masked, symmetric_info_nce(image[present], text[present], SCALE))
    changed = text.clone()
    changed[2] = unit(1, 8, seed=99)[0]  # whatever the absent row holds
    assert torch.equal(attribute_info_nce(image, changed, present, SCALE), masked)


def test_multi_attribute_loss_is_unchanged_by_an_extra_row_missing_every_attribute():
    names = ("color", "lighting")
    image = {a: unit(5, 8, seed=10 + i) for i, a in enumerate(names)}
    text = {a: unit(5, 8, seed=20 + i) for i, a in enumerate(names)}
    present = {"color": torch.tensor([1, 1, 1, 0, 1]).bool(), "lighting": torch.tensor([1, 0, 1, 1, 1]).bool()}
    weights = {"color": 1.0, "lighting": 0.5}
    base = multi_attribute_info_nce(image, text, present, SCALE, weights)
    grown = multi_attribute_info_nce(
        {a: torch.cat([v, unit(1, 8, seed=30)]) for a, v in image.items()},
        {a: torch.cat([v, unit(1, 8, seed=31)]) for a, v in text.items()},
        {a: torch.cat([v, torch.tensor([False])]) for a, v in present.items()}, SCALE, weights)  # fmt: skip
    assert torch.allclose(grown["contrastive"], base["contrastive"], atol=1e-6)
    expected = (1.0 * base["contrastive/color"] + 0.5 * base["contrastive/lighting"]) / 1.5
    assert torch.allclose(base["contrastive"], expected, atol=1e-6)


def test_an_attribute_with_fewer_than_two_rows_adds_nothing_and_no_nan():
    image, text = {"a": unit(4, 8, seed=1), "b": unit(4, 8, seed=2)}, {"a": unit(4, 8, seed=3), "b": unit(4, 8, seed=4)}
    present = {"a": torch.ones(4, dtype=torch.bool), "b": torch.tensor([True, False, False, False])}
    out = multi_attribute_info_nce(image, text, present, SCALE, {"a": 1.0, "b": 1.0})
    assert torch.isfinite(out["contrastive"]) and out["contrastive/b"] == 0
    assert torch.allclose(out["contrastive"], out["contrastive/a"])


def test_preserve_is_zero_for_equal_or_rotated_encoders_and_positive_otherwise():
    features = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    assert preserve_affinity_loss(features, features) == 0
    assert preserve_affinity_loss(features @ rotation, features) < 1e-10
    assert preserve_affinity_loss(torch.randn(8, 16), features) > 1e-3


@pytest.mark.parametrize("reading", ["preserve", "restrain"])
def test_affinity_losses_are_invariant_to_batch_order(reading):
    a, b = torch.randn(10, 16), torch.randn(10, 12)
    order = torch.randperm(10)
    names = ("student", "reference") if reading == "preserve" else ("aesthetic", "content")
    first = semantic_affinity_loss(reading, **{names[0]: a, names[1]: b})
    second = semantic_affinity_loss(reading, **{names[0]: a[order], names[1]: b[order]})
    assert torch.allclose(first, second, atol=1e-6) and first > 0


def test_restrain_is_one_for_the_content_itself_and_pushes_affinity_apart():
    content = torch.randn(12, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(restrain_affinity_loss(content, content), torch.tensor(1.0), atol=1e-5)
    aesthetic = (content + 0.5 * torch.randn(12, 16)).requires_grad_(True)
    before = restrain_affinity_loss(aesthetic, content)
    before.backward()
    with torch.no_grad():
        after = restrain_affinity_loss(aesthetic - 0.5 * aesthetic.grad / aesthetic.grad.norm(), content)
    assert after < before


def test_no_gradient_reaches_the_frozen_side_of_either_affinity():
    student, reference = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    (preserve_affinity_loss(student, reference) + restrain_affinity_loss(student, reference)).backward()
    assert student.grad is not None and reference.grad is None


def test_unknown_affinity_reading_is_named():
    with pytest.raises(ValueError, match="bogus"):
        semantic_affinity_loss("bogus", student=torch.zeros(2, 2), reference=torch.zeros(2, 2))
