"""Exponential moving average of the trainable weights (``trainer.ema_decay``, ours).

Small heads trained on a few thousand images wander with the SGD noise of every batch;
the average of the recent weights sits nearer the minimum (Polyak averaging). Validation,
``best.pt``'s choice and ``best.safetensors`` use the averaged weights; training continues
on the raw ones. Measured on the toy quickstart: docs/method.md.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """A float32 average of every parameter of ``model`` that requires a gradient.

    ``update`` after each optimizer step: ``s <- decay * s + (1 - decay) * w`` from
    ``s = 0``; the average is ``s / (1 - decay ** n)`` after ``n`` updates (Adam's bias
    correction), so it weighs only weights reached by training, never the initial ones,
    and needs no warm-up schedule (short runs average from their first step).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"trainer.ema_decay must be in (0, 1) (0 turns the average off); got {decay}")
        self.decay, self.updates = decay, 0
        self.shadow = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        for name, parameter in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(parameter.detach().float(), 1.0 - self.decay)

    def averaged(self) -> dict[str, torch.Tensor]:
        """The bias-corrected averages (empty before the first update)."""
        if self.updates == 0:
            return {}
        correction = 1.0 - self.decay**self.updates
        return {name: value / correction for name, value in self.shadow.items()}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` holds the averaged weights; the raw ones come back after."""
        parameters = dict(model.named_parameters())
        averaged = self.averaged()
        raw = {name: parameters[name].detach().clone() for name in averaged}
        with torch.no_grad():
            for name, value in averaged.items():
                parameters[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in raw.items():
                    parameters[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise KeyError(f"the checkpoint's weight average lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        self.updates = int(state["updates"])
        for name in self.shadow:
            self.shadow[name].copy_(state["shadow"][name])
