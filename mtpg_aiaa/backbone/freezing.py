"""What ``model.freeze`` means, for every system: ``frozen`` (the pretrained part gets no
gradient), ``last_n`` (only its last ``freeze_last_n`` blocks train) or ``full`` (all of it
trains). Each model says what its pretrained part is in ``set_freeze(policy, last_n)``; the
engine calls it once, after building (``engine/freezing.py``)."""
from __future__ import annotations

from collections.abc import Sequence

from ..errors import SettingError
from .longclip import LongCLIP

POLICIES = ("frozen", "last_n", "full")


def check_policy(policy: str, supported: Sequence[str], model_name: str) -> None:
    """A one-line ``SettingError`` for a policy the model does not support."""
    if policy not in POLICIES:
        raise SettingError(f"model.freeze must be one of {', '.join(POLICIES)}; got {policy!r}")
    if policy not in supported:
        raise SettingError(f"model.freeze={policy} is not available for {model_name} "
                           f"(it takes {' or '.join(supported)})")


def apply_freeze_policy(backbone: LongCLIP, policy: str, last_n: int = 0) -> None:
    """Set ``requires_grad`` on a Long-CLIP / CLIP backbone.

    ``last_n`` unfreezes the last ``last_n`` residual blocks of both towers plus what
    follows them (vision ``ln_post``/``proj``, text ``ln_final``/``text_projection``).
    The backbone's own ``logit_scale`` is unused by MTPG-AIAA and always frozen.
    """
    if policy not in POLICIES:
        raise ValueError(f"freeze policy must be one of {POLICIES}, got {policy!r}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(policy == "full")
    backbone.logit_scale.requires_grad_(False)
    if policy != "last_n":
        return
    if last_n < 1:
        raise ValueError(f"freeze policy last_n needs last_n >= 1, got {last_n}")
    visual_blocks = backbone.visual.transformer.resblocks
    text_blocks = backbone.transformer.resblocks
    trainable = [*visual_blocks[-last_n:], *text_blocks[-last_n:], backbone.visual.ln_post, backbone.ln_final]
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    backbone.visual.proj.requires_grad_(True)
    backbone.text_projection.requires_grad_(True)


def backbone_is_frozen(backbone: LongCLIP) -> bool:
    return not any(p.requires_grad for p in backbone.parameters())
