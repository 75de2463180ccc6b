"""Freezing, said one way for every system: the model group's ``freeze`` (``frozen`` |
``last_n`` | ``full``) and ``freeze_last_n``.

The one path: ``engine/builders.build_training_model`` takes these two keys out of the model
group (they never reach a system's build function), builds the model, then calls
:func:`freeze_model`, which hands them to the model's ``set_freeze(policy, last_n)``; the model
says what its pretrained part is (MTPG-AIAA and CG-IAA's scorer: the Long-CLIP / CLIP towers;
a CG-IAA expert: GPT-2; AesNet: the image encoder) and which policies it takes.
"""
from __future__ import annotations

from torch import nn

from ..backbone.freezing import POLICIES, apply_freeze_policy, backbone_is_frozen
from ..errors import SettingError

FREEZE_KEYS = ("freeze", "freeze_last_n")  # the model group's keys this module reads

__all__ = ["FREEZE_KEYS", "POLICIES", "apply_freeze_policy", "backbone_is_frozen", "freeze_model"]


def freeze_model(model: nn.Module, policy: str, last_n: int = 0) -> None:
    """Apply ``model.freeze=policy`` (``freeze_last_n=last_n``) to ``model``."""
    set_freeze = getattr(model, "set_freeze", None)
    if set_freeze is None:
        raise SettingError(f"model.freeze={policy}: {type(model).__name__} does not say what freezing means "
                           "for it (it has no set_freeze(policy, last_n))")  # fmt: skip
    set_freeze(policy, int(last_n or 0))
