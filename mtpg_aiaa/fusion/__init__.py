"""Fusion of image and description features (``official``: the released module)."""
from .official import OfficialFusion

__all__ = ["OfficialFusion"]
