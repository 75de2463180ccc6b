"""CG-IAA's training objectives: VLAP's contrastive loss, the experts' token loss, MAP's score loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtpg_aiaa.losses import class_info_nce as class_infonce, emd_loss, info_nce

__all__ = ["class_infonce", "critique_token_loss", "score_loss", "symmetric_infonce"]


def symmetric_infonce(image_features: torch.Tensor, text_features: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """CLIP's loss on matched pairs ``[B, D]`` x ``[B, D]``: cross-entropy over image->text and
    text->image cosine similarities / ``temperature``, averaged (row i matches column i)."""
    return info_nce(image_features, text_features, temperature=temperature, normalize=True)


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
