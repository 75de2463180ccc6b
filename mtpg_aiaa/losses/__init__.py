"""Losses more than one system trains with: earth mover's distance over ordered bins and
InfoNCE over matched (or class-shared) image-text pairs. A loss one system alone uses stays in
that system's ``models/<system>/losses.py``."""
from .distribution import emd_loss
from .contrastive import class_info_nce, info_nce, matched_pairs_cross_entropy

__all__ = ["class_info_nce", "emd_loss", "info_nce", "matched_pairs_cross_entropy"]
