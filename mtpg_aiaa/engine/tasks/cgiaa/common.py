"""Pieces the three CG-IAA tasks share (their image tables are ``data.AestheticsDataset``)."""
from __future__ import annotations

import torch


def trainable_names(module: torch.nn.Module) -> list[str]:
    return [name for name, parameter in module.named_parameters() if parameter.requires_grad]
