"""Pieces the three CG-IAA tasks share (their image tables are ``data.AestheticsDataset``)."""
from __future__ import annotations

import torch


def trainable_names(module: torch.nn.Module) -> list[str]:
    return [name for name, parameter in module.named_parameters() if parameter.requires_grad]


def build_task_model(cfg) -> torch.nn.Module:
    """``train.py``'s model for a CG-IAA task (``task.build_model``): ``task.model``'s
    ``_target_`` built with its keys, then ``init_from`` tensors loaded where names and shapes
    match (a VLAP run's CLIP into a MAP scorer, an earlier expert into a new one)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from ...builders import read_init_state

    model = instantiate(OmegaConf.to_container(cfg.task.model, resolve=True), _convert_="all")
    if cfg.get("init_from"):
        own = model.state_dict()
        incoming = read_init_state(cfg.init_from)
        matched = {k: v for k, v in incoming.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise ValueError(f"init_from={cfg.init_from}: no tensor matches {type(model).__name__}'s names and shapes")
        model.load_state_dict(matched, strict=False)
    return model
