"""Optimiser and learning-rate schedule for both stages."""
from __future__ import annotations

import math

import torch
from torch import nn


def parameter_groups(model: nn.Module, backbone_lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: backbone vs new layers (separate learning rates), each split into
    decayed weights and undecayed 1-D tensors (biases, norms, embeddings, temperatures).

    Frozen parameters are left out. Group names travel in ``group["name"]`` for logging.
    """
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "backbone" if name.startswith("backbone.") else "head"
        decay = parameter.ndim >= 2 and "embedding" not in name
        key = f"{part}/{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(
            key,
            {"name": key, "params": [], "lr": backbone_lr if part == "backbone" else head_lr,
             "weight_decay": weight_decay if decay else 0.0},
        )  # fmt: skip
        group["params"].append(parameter)
    if not groups:
        raise ValueError("no trainable parameters: check the freezing policy")
    return list(groups.values())


def build_optimizer(model: nn.Module, backbone_lr: float, head_lr: float, weight_decay: float = 0.01,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:  # fmt: skip
    """AdamW over :func:`parameter_groups` (fp32 master weights: parameters stay fp32).

    On CUDA the fused kernel (one launch per step instead of several per tensor group)."""
    groups = parameter_groups(model, backbone_lr, head_lr, weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = True if params and all(p.is_cuda for p in params) else None
    return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps, fused=fused)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                       min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:  # fmt: skip
    """Linear warm-up from 0 to each group's lr over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio`` of it at ``total_steps`` (optimizer steps, not micro-batches)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
