"""AesNet (Huang et al., TPAMI 2025): multi-attribute contrastive pretraining of an
aesthetics backbone with a semantic affinity loss. No code was released; what is the
paper's and what is ours is in docs/aesnet.md."""
from .checkpoint import load_scorer, recognizes, save_scorer
from .model import (
    ATTRIBUTES,
    AesNetConfig,
    AesNetPretrainModel,
    AesNetScorer,
    AesNetScorerConfig,
    attribute_prompt,
    scorer_from_pretrained,
)


def build_scorer(**config) -> AesNetScorer:
    """A fresh AesNet scorer (the registry's ``build``, declared in system.json)."""
    weights = config.pop("encoder_weights", None)
    return AesNetScorer(AesNetScorerConfig(**config), encoder_weights=weights)


__all__ = ["ATTRIBUTES", "AesNetConfig", "AesNetPretrainModel", "AesNetScorer", "AesNetScorerConfig",
           "attribute_prompt", "build_scorer", "load_scorer", "save_scorer", "scorer_from_pretrained"]  # fmt: skip
