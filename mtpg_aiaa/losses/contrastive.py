"""InfoNCE, once: CLIP's symmetric loss over matched image-text pairs, and its class form in
which identical texts are one class.

The systems differ only in how they form the logits (a learned log-scale, or a fixed
temperature; features normalised by the caller or here); each option below reproduces one
system's arithmetic exactly, operation for operation, so their figures do not move.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def matched_pairs_cross_entropy(logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Symmetric cross-entropy of a ``[N, N]`` similarity matrix whose row ``i`` matches column
    ``i``: ``(CE(logits, I) + CE(logits^T, I)) / 2``, a scalar."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
            + F.cross_entropy(logits.T, targets, label_smoothing=label_smoothing)) / 2  # fmt: skip


def info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | None = None,
             temperature: float | None = None, normalize: bool = False, label_smoothing: float = 0.0) -> torch.Tensor:  # fmt: skip
    """CLIP's symmetric InfoNCE over matched rows of ``image [N, D]`` and ``text [N, D]``.

    Logits are ``exp(logit_scale) * image @ text^T`` (a learned log inverse temperature,
    MTPG-AIAA and AesNet) or ``image @ text^T / temperature`` (CG-IAA's fixed one); exactly
    one of the two is given. ``normalize`` l2-normalises both first (for callers whose
    features are not yet unit length).
    """
    if (logit_scale is None) == (temperature is None):
        raise ValueError("info_nce takes exactly one of logit_scale and temperature")
    if normalize:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.exp() * image @ text.T if logit_scale is not None else image @ text.T / temperature
    return matched_pairs_cross_entropy(logits, label_smoothing)


def class_info_nce(image_features: torch.Tensor, class_features: torch.Tensor, labels: torch.Tensor,
                   temperature: float = 0.07) -> torch.Tensor:  # fmt: skip
    """Symmetric InfoNCE where identical texts are one class (UniCL-style): ``image_features [B, D]``,
    ``class_features [C, D]`` (one per distinct text), ``labels [B]`` in ``0..C-1``; both
    feature sets are l2-normalised here.

    Image -> text: cross-entropy over the C texts. Text -> image: each text present in the batch
    against the B images, its log-probability averaged over all images that carry it. With
    many pictures per text, plain InfoNCE would treat a picture's copies of the same text as
    negatives; with ``labels = arange(B)`` this is ``info_nce(..., normalize=True)``.
    """
    image_features, class_features = F.normalize(image_features, dim=-1), F.normalize(class_features, dim=-1)
    logits = image_features @ class_features.T / temperature  # [B, C]
    positives = F.one_hot(labels, class_features.shape[0]).T.to(logits.dtype)  # [C, B]
    count = positives.sum(dim=1)
    present = count > 0
    text_to_image = -((logits.T.log_softmax(dim=1) * positives).sum(dim=1)[present] / count[present]).mean()
    return (F.cross_entropy(logits, labels) + text_to_image) / 2
