"""The five aesthetic-level prompts of MTPG-AIAA and the score each level stands for."""
from __future__ import annotations

import itertools

import torch

LEVELS = ("bad", "poor", "fair", "good", "perfect")
# Centre of each level's bin on the 0-1 scale; the expected score is probs @ LEVEL_SCORES.
LEVEL_SCORES = (0.1, 0.3, 0.5, 0.7, 0.9)
PROMPT_SETS = ("official", "clean")


def level_prompts(prompt_set: str = "official") -> list[str]:
    """The five prompt strings, lowest level first.

    ``official``: the strings the released checkpoint was used with. The authors format
    each element of ``itertools.product(levels)``, a 1-tuple, so the text literally reads
    ``An image with ('bad',) aesthetics.`` -- reproduced here on purpose.
    ``clean``: the evident intent, ``An image with bad aesthetics.``, for models we train.
    """
    if prompt_set == "official":
        return [f"An image with {level} aesthetics." for level in itertools.product(LEVELS)]
    if prompt_set == "clean":
        return [f"An image with {level} aesthetics." for level in LEVELS]
    raise ValueError(f"unknown prompt set {prompt_set!r}; choose from {PROMPT_SETS}")


def expected_score(probs: torch.Tensor) -> torch.Tensor:
    """Score on [0, 1] from level probabilities ``[B, 5] -> [B]``."""
    weights = torch.tensor(LEVEL_SCORES, dtype=probs.dtype, device=probs.device)
    return probs @ weights
