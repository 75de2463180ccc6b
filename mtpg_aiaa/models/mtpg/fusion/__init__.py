"""Fusion of image and description features.

``official``: the released module (batch-level products); ``token``: ours, per-sample
cross-attention over tokens; ``none``: image only.
"""
from .official import OfficialFusion
from .token import NoFusion, TokenFusion

__all__ = ["NoFusion", "OfficialFusion", "TokenFusion"]
