"""CG-IAA's training objectives: VLAP's contrastive loss, the experts' token loss, MAP's score loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtpg_aiaa.models.mtpg.losses import emd_loss


def symmetric_infonce(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """CLIP's loss on matched pairs ``[B, D]`` x ``[B, D]``: cross-entropy over image->text and
    text->image cosine similarities / ``temperature``, averaged (row i matches column i)."""
    image_features, text_features = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    logits = image_features @ text_features.T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def class_infonce(image_features: torch.Tensor, class_features: torch.Tensor, labels: torch.Tensor,
                  temperature: float = 0.07) -> torch.Tensor:  # fmt: skip
    """Symmetric InfoNCE where identical texts are one class (UniCL-style): ``image_features [B, D]``,
    ``class_features [C, D]`` (one per distinct text), ``labels [B]`` in ``0..C-1``.

    Image -> text: cross-entropy over the C texts. Text -> image: each text present in the batch
    against the B images, its log-probability averaged over all images that carry it. With
    many pictures per text (3-5 toy critiques per attribute), plain InfoNCE would treat a
    picture's copies of the same text as negatives; with ``labels = arange(B)`` this is it.
    """
    image_features, class_features = F.normalize(image_features, dim=-1), F.normalize(class_features, dim=-1)
    logits = image_features @ class_features.T / temperature  # [B, C]
    positives = F.one_hot(labels, class_features.shape[0]).T.to(logits.dtype)  # [C, B]
    count = positives.sum(dim=1)
    present = count > 0
    text_to_image = -((logits.T.log_softmax(dim=1) * positives).sum(dim=1)[present] / count[present]).mean()
    return (F.cross_entropy(logits, labels) + text_to_image) / 2


def critique_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, prefix_length: int, mask: torch.Tensor | None = None,
    released_padding: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Next-token cross-entropy of a prefix captioner.

    Args:
        logits: ``[B, prefix_length + L, V]`` from ``CritiqueExpert.forward``.
        tokens: ``[B, L]`` caption tokens, padded with 0.
        prefix_length: the number of prefix positions before the tokens.
        mask: ``[B, L]`` 1 for real tokens; the default loss ignores the padding by it.
        released_padding: ClipCap's (and the release's) loss instead: ``ignore_index=0``, so
            padding is skipped but so is every real token 0 ("!" in GPT-2), and ``mask`` is unused.
    """
    predicted = logits[:, prefix_length - 1 : -1]  # position t predicts token t
    flat_logits, flat_tokens = predicted.reshape(-1, predicted.shape[-1]), tokens.reshape(-1)
    if released_padding:
        return F.cross_entropy(flat_logits, flat_tokens, ignore_index=0)
    if mask is None:
        raise ValueError("critique_token_loss needs the token mask unless released_padding=True")
    target = flat_tokens.masked_fill(~mask.reshape(-1).bool(), -100)
    return F.cross_entropy(flat_logits, target, ignore_index=-100)


def score_loss(output: dict[str, torch.Tensor], target: torch.Tensor, target_distribution: torch.Tensor | None = None) -> torch.Tensor:
    """MAP's loss: EMD (r = 2) to ``target_distribution [B, K]`` when the scorer predicts a
    distribution and one is given, otherwise the mean squared error of ``score`` to ``target [B]``."""
    if "distribution" in output and target_distribution is not None:
        return emd_loss(output["distribution"], target_distribution)
    return F.mse_loss(output["score"], target.to(output["score"].dtype))
