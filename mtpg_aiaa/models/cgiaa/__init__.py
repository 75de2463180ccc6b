"""CG-IAA (Li et al., TCSVT 2025): attribute critique experts, their generator and the
critique-fused scorer. See ``docs/cgiaa.md``."""
from .beam import BeamResult, beam_search, literal_beam_search
from .expert import CritiqueExpert, GPT2Sizes, build_expert_from_state_dict, load_expert, save_expert
from .generator import ATTRIBUTES, CritiqueGenerator, load_generator
from .mapper import MapperConfig, TransformerMapper
from .prefix import build_release_transform, clip_prefix
from .tokenizer import load_gpt2_tokenizer

__all__ = [
    "ATTRIBUTES",
    "BeamResult",
    "CritiqueExpert",
    "CritiqueGenerator",
    "GPT2Sizes",
    "MapperConfig",
    "TransformerMapper",
    "beam_search",
    "build_expert_from_state_dict",
    "build_release_transform",
    "clip_prefix",
    "literal_beam_search",
    "load_expert",
    "load_generator",
    "load_gpt2_tokenizer",
    "save_expert",
]

from ..registry import ModelEntry, register_model  # noqa: E402
from .scorer import CGIAAScorer, build_cgiaa_scorer, load_cgiaa_scorer, recognizes_cgiaa  # noqa: E402

register_model(ModelEntry(
    name="cgiaa", build=build_cgiaa_scorer, load=load_cgiaa_scorer, recognizes=recognizes_cgiaa,
    description="CG-IAA: image + four attribute critiques (colour, composition, depth and focus, general) -> score",
    weights_help="its authors released the critique experts but no scorer: train one here "
                 "(python train.py task=cgiaa/score, docs/cgiaa.md) and pass its best.safetensors",
))  # fmt: skip
__all__ += ["CGIAAScorer", "build_cgiaa_scorer", "load_cgiaa_scorer"]
