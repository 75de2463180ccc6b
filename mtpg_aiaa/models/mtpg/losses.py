"""Training losses for both MTPG-AIAA stages (pure functions; the trainer picks them by name).

The paper released no loss code. What is the paper's and what is ours is recorded in
docs/method.md: stage 2's level prompts and score-as-expected-level are the release's;
the choice and exact form of each loss below is our design.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtpg_aiaa.losses import emd_loss, info_nce

from .prompts import LEVEL_SCORES


# -- stage 2: scores from level probabilities -------------------------------------------
def soft_level_distribution(target: torch.Tensor, sigma: float = 0.1) -> torch.Tensor:
    """A distribution over the five levels centred on each target score.

    ``target [B]`` on 0-1 -> ``[B, 5]``: a Gaussian of width ``sigma`` evaluated at the
    level centres (0.1 ... 0.9) and normalised. Its expectation tracks the target, so
    EMD / cross-entropy against it teach both the level and the score.
    """
    centres = torch.tensor(LEVEL_SCORES, dtype=target.dtype, device=target.device)
    logits = -((target[:, None] - centres[None, :]) ** 2) / (2 * sigma**2)
    return logits.softmax(dim=-1)


def soft_cross_entropy(logits: torch.Tensor, target_dist: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits [B, K]`` against a soft target distribution ``[B, K]``."""
    return -(target_dist * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def fidelity_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Pairwise fidelity loss on the ranking of every pair in the batch (as in LIQE).

    ``p_ij`` = 1 if target_i > target_j, 0.5 on ties, 0 otherwise; the model's
    ``q_ij = sigmoid((pred_i - pred_j) / temperature)``; loss
    ``1 - sqrt(p q) - sqrt((1-p)(1-q))`` averaged over pairs ``i != j``. Batches of one
    give zero (no pair).
    """
    n = pred.shape[0]
    if n < 2:
        return pred.sum() * 0.0
    p = (target[:, None] > target[None, :]).float() + 0.5 * (target[:, None] == target[None, :]).float()
    q = torch.sigmoid((pred[:, None] - pred[None, :]) / temperature)
    eps = 1e-8
    loss = 1 - torch.sqrt(p * q + eps) - torch.sqrt((1 - p) * (1 - q) + eps)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=pred.device)
    return loss[off_diagonal].mean()


def score_losses(
    outputs: dict[str, torch.Tensor], target: torch.Tensor, weights: dict[str, float], sigma: float = 0.1,
    fidelity_temperature: float = 0.05,
) -> dict[str, torch.Tensor]:
    """The weighted stage-2 losses named in ``weights`` (``fidelity``, ``emd``, ``ce``, ``mse``).

    ``sigma``: width of the soft level distribution (emd, ce); ``fidelity_temperature``:
    the fidelity loss's score-difference scale (docs/method.md has the sweep behind both).

    Returns each term (unweighted, detached for logging) and ``loss``, their weighted sum.
    """
    dist = None
    terms: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        if not weight:
            continue
        if name in ("emd", "ce") and dist is None:
            dist = soft_level_distribution(target, sigma)
        if name == "fidelity":
            terms[name] = fidelity_loss(outputs["score"], target, fidelity_temperature)
        elif name == "emd":
            terms[name] = emd_loss(outputs["probs"], dist)
        elif name == "ce":
            terms[name] = soft_cross_entropy(outputs["logits"], dist)
        elif name == "mse":
            terms[name] = F.mse_loss(outputs["score"], target)
        else:
            raise ValueError(f"unknown stage-2 loss {name!r}; choose from fidelity, emd, ce, mse")
    if not terms:
        raise ValueError("every stage-2 loss weight is zero")
    total = sum(weights[name] * value for name, value in terms.items())
    return {"loss": total, **{name: value.detach() for name, value in terms.items()}}


# -- stage 1: manipulation prompts ------------------------------------------------------
def prompt_matching_loss(
    image_features: torch.Tensor, prompt_features: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Classify each image ``[B, D]`` among the prompts ``[P, D]`` (both l2-normalised) by
    cosine similarity; ``labels [B]`` index the prompt of the manipulation applied."""
    logits = logit_scale.exp() * image_features @ prompt_features.T
    return F.cross_entropy(logits, labels)


def strength_ordering_loss(distances: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """Feature distance to the original must grow with strength.

    ``distances [B, S]``: distance of the mild ... strong versions from the original;
    a hinge ``max(0, d_s - d_{s+1} + margin)`` on each consecutive pair (SAAN's ordering
    loss, on cosine distances so the margin is scale-free).
    """
    return F.relu(distances[:, :-1] - distances[:, 1:] + margin).mean()


def preference_loss(original_score: torch.Tensor, manipulated_score: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """The unaltered painting should score above its manipulation: ``max(0, m - (s_o - s_m))``."""
    return F.relu(margin - (original_score - manipulated_score)).mean()


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Symmetric InfoNCE between matched image and description features ``[B, D]`` (l2-normalised),
    scaled by ``exp(logit_scale)`` (``mtpg_aiaa.losses.info_nce``)."""
    return info_nce(image_features, text_features, logit_scale=logit_scale, label_smoothing=label_smoothing)
