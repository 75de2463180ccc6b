"""Training losses: values on hand-checkable cases and the direction of their gradients."""
from __future__ import annotations

import math

import pytest
import torch

from mtpg_aiaa.models.mtpg import losses
from mtpg_aiaa.models.mtpg.prompts import expected_score


def test_soft_level_distribution_tracks_the_target():
    target = torch.tensor([0.1, 0.3, 0.5, 0.9, 0.42])
    dist = losses.soft_level_distribution(target, sigma=0.05)
    assert dist.sum(dim=-1) == pytest.approx([1.0] * 5)
    assert dist.argmax(dim=-1).tolist() == [0, 1, 2, 4, 2]
    assert expected_score(dist)[:4] == pytest.approx([0.1, 0.3, 0.5, 0.9], abs=0.01)


def test_emd_is_zero_for_equal_distributions_and_grows_with_distance():
    a = torch.tensor([[1.0, 0, 0, 0, 0]])
    near = torch.tensor([[0, 1.0, 0, 0, 0]])
    far = torch.tensor([[0, 0, 0, 0, 1.0]])
    assert losses.emd_loss(a, a) == 0
    # CDF differences: near -> one entry of 1; far -> four entries of 1 (r=2, mean over 5)
    assert losses.emd_loss(a, near).item() == pytest.approx(math.sqrt(1 / 5))
    assert losses.emd_loss(a, far).item() == pytest.approx(math.sqrt(4 / 5))


def test_soft_cross_entropy_matches_hard_cross_entropy_on_one_hot():
    logits = torch.randn(4, 5)
    labels = torch.tensor([0, 3, 2, 4])
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    assert losses.soft_cross_entropy(logits, one_hot) == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())


def test_fidelity_rewards_correct_ranking():
    target = torch.tensor([0.2, 0.5, 0.8])
    right = losses.fidelity_loss(torch.tensor([0.1, 0.5, 0.9]), target, temperature=0.05)
    wrong = losses.fidelity_loss(torch.tensor([0.9, 0.5, 0.1]), target, temperature=0.05)
    assert right < 0.05 < 0.9 < wrong
    assert losses.fidelity_loss(torch.tensor([0.3]), torch.tensor([0.4])) == 0


def test_score_losses_weighting_and_errors():
    logits = torch.randn(6, 5, requires_grad=True)
    probs = logits.softmax(-1)
    outputs = {"logits": logits, "probs": probs, "score": expected_score(probs)}
    target = torch.rand(6)
    out = losses.score_losses(outputs, target, {"fidelity": 1.0, "emd": 0.5, "mse": 0.0})
    assert set(out) == {"loss", "fidelity", "emd"}
    assert out["loss"].item() == pytest.approx(out["fidelity"].item() + 0.5 * out["emd"].item(), rel=1e-6)
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown stage-2 loss"):
        losses.score_losses(outputs, target, {"huber": 1.0})
    with pytest.raises(ValueError, match="zero"):
        losses.score_losses(outputs, target, {"mse": 0.0})


def test_stage1_losses():
    features = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    prompts = torch.nn.functional.normalize(torch.randn(30, 8), dim=-1)
    prompts[:4] = features  # the right prompt is the image itself
    scale = torch.tensor(math.log(100.0))
    assert losses.prompt_matching_loss(features, prompts, torch.arange(4), scale) < 0.5
    assert losses.prompt_matching_loss(features, prompts, torch.arange(4) + 10, scale) > 1.0
    assert losses.strength_ordering_loss(torch.tensor([[0.1, 0.2, 0.3]]), margin=0.05) == 0
    assert losses.strength_ordering_loss(torch.tensor([[0.3, 0.2, 0.1]]), margin=0.05).item() == pytest.approx(0.15)
    assert losses.preference_loss(torch.tensor([0.8]), torch.tensor([0.2])) == 0
    assert losses.preference_loss(torch.tensor([0.2]), torch.tensor([0.3]), margin=0.05).item() == pytest.approx(0.15)
    matched = losses.contrastive_loss(features, features, scale)
    shuffled = losses.contrastive_loss(features, features.roll(1, dims=0), scale)
    assert matched < shuffled


# -- the shared losses (mtpg_aiaa.losses): said once, each system's arithmetic kept ---------
def _pairs(seed: int, n: int = 6, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
    return torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


def test_every_system_takes_emd_and_infonce_from_the_shared_module():
    import mtpg_aiaa.losses as shared
    from mtpg_aiaa.models.aesnet import losses as aesnet
    from mtpg_aiaa.models.cgiaa import losses as cgiaa

    assert losses.emd_loss is shared.emd_loss and cgiaa.emd_loss is shared.emd_loss
    assert cgiaa.class_infonce is shared.class_info_nce
    assert aesnet.info_nce is shared.info_nce and cgiaa.info_nce is shared.info_nce and losses.info_nce is shared.info_nce
    for module in (losses, cgiaa, aesnet):  # no system imports another's losses
        source = open(module.__file__).read()
        assert "models.mtpg.losses" not in source and "models.cgiaa" not in source.replace("models.cgiaa.losses", "")


def test_shared_infonce_keeps_each_systems_arithmetic_bit_for_bit():
    """The formulas each system had before the move, written out: the values must be equal, not close."""
    import torch.nn.functional as F

    from mtpg_aiaa.models.aesnet.losses import MAX_LOGIT_SCALE, symmetric_info_nce
    from mtpg_aiaa.models.cgiaa.losses import symmetric_infonce

    image, text = _pairs(0)
    target = torch.arange(6)
    scale = torch.tensor(2.7)
    logits = scale.exp() * image @ text.T
    mtpg = (F.cross_entropy(logits, target, label_smoothing=0.1) + F.cross_entropy(logits.T, target, label_smoothing=0.1)) / 2
    assert torch.equal(losses.contrastive_loss(image, text, scale, label_smoothing=0.1), mtpg)
    raw_image, raw_text = image * 3, text * 0.5
    logits = F.normalize(raw_image, dim=-1) @ F.normalize(raw_text, dim=-1).T / 0.07
    assert torch.equal(symmetric_infonce(raw_image, raw_text), (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    big = torch.tensor(9.0)  # above AesNet's clamp
    logits = big.clamp(max=MAX_LOGIT_SCALE).exp() * image @ text.T
    assert torch.equal(symmetric_info_nce(image, text, big), 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))


def test_info_nce_wants_exactly_one_of_scale_and_temperature():
    from mtpg_aiaa.losses import info_nce

    image, text = _pairs(1)
    with pytest.raises(ValueError, match="exactly one"):
        info_nce(image, text)
    with pytest.raises(ValueError, match="exactly one"):
        info_nce(image, text, logit_scale=torch.tensor(1.0), temperature=0.1)
