"""``torch.compile`` of the Long-CLIP towers, one transformer block at a time (opt-in).

Each block is compiled in place (``nn.Module.compile``): the blocks of a tower share their
code, so one compiled graph serves all of them (PyTorch's "regional compilation"), compile
time stays that of one block, and nothing outside the blocks (token trimming, EOT pooling,
the fusion, the losses) is traced. Parameters and state-dict keys are unchanged, so
checkpoints written from a compiled model load anywhere.

Off by default (``eval.compile``, ``trainer.compile``): on the GPU it is measured by
``scripts/gpu_check.py`` (parts ``forward_b256_compile`` and ``train_full_compile``) and
kept only if it pays.
"""
from __future__ import annotations

from open_clip.transformer import ResidualAttentionBlock
from torch import nn


def compile_blocks(model: nn.Module, **options) -> int:
    """Compile every transformer block of every Long-CLIP inside ``model`` in place;
    ``options`` go to ``torch.compile`` (``mode``, ``dynamic``, ...). Returns the count."""
    blocks = [module for module in model.modules() if isinstance(module, ResidualAttentionBlock)]
    for block in blocks:
        block.compile(**options)
    return len(blocks)
