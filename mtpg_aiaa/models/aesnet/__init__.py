"""AesNet (Huang et al., TPAMI 2025): multi-attribute contrastive pretraining of an
aesthetics backbone with a semantic affinity loss. No code was released; what is the
paper's and what is ours is in docs/aesnet.md."""
from ..registry import ModelEntry, register_model
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
    weights = config.pop("encoder_weights", None)
    return AesNetScorer(AesNetScorerConfig(**config), encoder_weights=weights)


register_model(ModelEntry(name="aesnet", build=build_scorer, load=load_scorer, recognizes=recognizes,
                          description="AesNet: attribute-contrastive pretrained encoder + linear score head",
                          weights_help="its authors released no code or weights: pretrain and finetune one here "
                                       "(docs/aesnet.md) and pass the finetune run's best.safetensors"))  # fmt: skip

__all__ = ["ATTRIBUTES", "AesNetConfig", "AesNetPretrainModel", "AesNetScorer", "AesNetScorerConfig",
           "attribute_prompt", "build_scorer", "load_scorer", "save_scorer", "scorer_from_pretrained"]  # fmt: skip
