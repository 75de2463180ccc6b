"""AesNet's pretraining losses (pure functions; the task picks them by name).

The paper (Huang et al., TPAMI 2025) names *multi-attribute contrastive learning* and a
*semantic affinity loss* but released no code or formulas. Every formula below is our
design; docs/aesnet.md records which reading was measured against which.

Notation: ``B`` rows in the (gathered) batch, ``A`` attributes, ``D`` embedding width.
``v_a [B, D]`` the image embedded in attribute ``a``'s space, ``t_a [B, D]`` the
description of attribute ``a`` in the same space, both l2-normalised; ``m_a [B]`` True
where the row has a description of ``a``; ``s = exp(logit_scale)`` (learnable, clamped).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from mtpg_aiaa.losses import info_nce

# CLIP clamps its learned scale at 100 (temperature 0.01) so the logits cannot blow up.
MAX_LOGIT_SCALE = math.log(100.0)
AFFINITY_READINGS = ("preserve", "restrain")


def symmetric_info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over matched rows.

    ``L = 1/2 [CE(s V T^T, I) + CE(s T V^T, I)]`` with ``V, T [N, D]`` l2-normalised,
    row ``i`` of ``V`` matched with row ``i`` of ``T`` and every other row a negative.

    Args:
        image, text: ``[N, D]``, l2-normalised.
        logit_scale: scalar log of the inverse temperature (clamped at log 100).

    Returns:
        a scalar; ``N < 2`` (no negative) gives a graph-connected zero.
    """
    if image.shape != text.shape:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} must have the same shape")
    if image.shape[0] < 2:
        return (image.sum() + text.sum() + logit_scale) * 0.0
    return info_nce(image, text, logit_scale=logit_scale.clamp(max=MAX_LOGIT_SCALE))


def attribute_info_nce(image: torch.Tensor, text: torch.Tensor, present: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Symmetric InfoNCE of one attribute over the rows that have that attribute.

    ``L_a = InfoNCE(V_a[m_a], T_a[m_a])``: rows without a description are dropped before
    the logits are formed, so they are neither positives nor negatives and the value is
    exactly that of the batch without them.

    Args:
        image: ``[B, D]`` image embeddings in the attribute's space.
        text: ``[B, D]`` description embeddings (rows where ``present`` is False are ignored,
            whatever they hold).
        present: ``[B]`` bool.
        logit_scale: scalar.
    """
    present = present.bool()
    return symmetric_info_nce(image[present], text[present], logit_scale)


def multi_attribute_info_nce(
    image: Mapping[str, torch.Tensor], text: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor],
    logit_scale: Mapping[str, torch.Tensor] | torch.Tensor, weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """The weighted sum of per-attribute InfoNCE losses.

    ``L_con = sum_a w_a L_a / sum_{a: |m_a| >= 2} w_a``: normalised by the weights of the
    attributes that had at least two described rows in this batch, so a batch in which an
    attribute is rare does not shrink the loss (our design; a zero-weight attribute is
    skipped).

    Args:
        image, text: ``{attribute: [B, D]}``, l2-normalised.
        present: ``{attribute: [B] bool}``.
        logit_scale: one scalar shared by all attributes, or ``{attribute: scalar}``.
        weights: ``{attribute: w_a}``; attributes absent from ``weights`` are skipped.

    Returns:
        ``{"contrastive": L_con, "contrastive/<a>": L_a (detached)}``.
    """
    total, norm, parts = None, 0.0, {}
    for name, weight in weights.items():
        if not weight:
            continue
        scale = logit_scale[name] if isinstance(logit_scale, Mapping) else logit_scale
        value = attribute_info_nce(image[name], text[name], present[name], scale)
        parts[f"contrastive/{name}"] = value.detach()
        total = weight * value if total is None else total + weight * value
        if int(present[name].sum()) >= 2:
            norm += float(weight)
    if total is None:
        raise ValueError("every attribute weight is zero")
    return {"contrastive": total / max(norm, 1e-12) if norm else total, **parts}


def affinity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Cosine affinity ``S = F F^T`` of l2-normalised ``features [B, D]`` -> ``[B, B]``."""
    features = F.normalize(features, dim=-1)
    return features @ features.T


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[0]
    return matrix[~torch.eye(n, dtype=torch.bool, device=matrix.device)]


def preserve_affinity_loss(student: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Reading *preserve*: the batch's image-image affinity stays close to a frozen
    reference encoder's, so general (content) knowledge is not lost in the shift to the
    aesthetic domain.

    ``L_pre = mean_{i != j} (S^stu_ij - S^ref_ij)^2`` with ``S = F F^T`` of the
    l2-normalised features. Zero when the two encoders agree up to a rotation of the
    embedding; independent of the order of the batch (a permutation permutes both
    matrices alike). ``reference`` gets no gradient.

    Args:
        student: ``[B, D_s]`` image features of the trained encoder.
        reference: ``[B, D_r]`` of the frozen one (widths may differ).
    """
    if student.shape[0] != reference.shape[0]:
        raise ValueError(f"student has {student.shape[0]} rows, reference {reference.shape[0]}")
    if student.shape[0] < 2:
        return student.sum() * 0.0
    difference = affinity_matrix(student) - affinity_matrix(reference.detach())
    return _off_diagonal(difference).pow(2).mean()


def restrain_affinity_loss(aesthetic: torch.Tensor, content: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Reading *restrain*: the aesthetic-space affinity is decorrelated from the content
    descriptions' affinity, so images are not close merely because they show the same thing.

    ``L_res = corr(off(S^aes), off(S^con))^2``: the squared Pearson correlation, over the
    pairs ``i != j``, between the aesthetic embeddings' affinity and the content
    descriptions' affinity. Squared, so both positive and negative dependence are
    penalised; correlation, so the loss ignores the scale and offset of either matrix.
    Batch-order invariant; ``content`` gets no gradient. Rows without a content
    description must be removed by the caller.

    Args:
        aesthetic: ``[B, D]`` image features in an aesthetic attribute space (or their mean).
        content: ``[B, D_c]`` content-description features (frozen text tower).
    """
    if aesthetic.shape[0] != content.shape[0]:
        raise ValueError(f"aesthetic has {aesthetic.shape[0]} rows, content {content.shape[0]}")
    if aesthetic.shape[0] < 3:  # fewer than 2 off-diagonal pairs: no correlation
        return aesthetic.sum() * 0.0
    x = _off_diagonal(affinity_matrix(aesthetic))
    y = _off_diagonal(affinity_matrix(content.detach()))
    x, y = x - x.mean(), y - y.mean()
    correlation = (x * y).sum() / (x.norm() * y.norm() + eps)
    return correlation.pow(2)


def semantic_affinity_loss(reading: str, **inputs: torch.Tensor) -> torch.Tensor:
    """Dispatch: ``preserve(student=, reference=)`` or ``restrain(aesthetic=, content=)``."""
    if reading == "preserve":
        return preserve_affinity_loss(inputs["student"], inputs["reference"])
    if reading == "restrain":
        return restrain_affinity_loss(inputs["aesthetic"], inputs["content"])
    raise ValueError(f"semantic affinity reading must be one of {AFFINITY_READINGS}, got {reading!r}")


def check_attribute_weights(weights: Mapping[str, float], attributes: Sequence[str]) -> None:
    """Unknown attributes and all-zero weights are errors, named."""
    unknown = sorted(set(weights) - set(attributes))
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown} in the loss weights; the model has {list(attributes)}")
    if not any(weights.values()):
        raise ValueError("every attribute weight is zero")
