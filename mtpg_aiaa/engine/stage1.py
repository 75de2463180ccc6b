"""Stage 1: self-supervised text-prompt pretraining (being built)."""
from __future__ import annotations


def build_pretrain_task(cfg, model):
    raise NotImplementedError("stage=pretrain is being built")
