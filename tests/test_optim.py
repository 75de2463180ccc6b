"""AdamW parameter groups: weight decay on weight matrices only, never on biases, norms,
embeddings or temperatures; backbone and head at their own learning rates; frozen
parameters left out."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mtpg_aiaa.engine.freezing import apply_freeze_policy
from mtpg_aiaa.engine.optim import build_optimizer
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def expected_decay(model: nn.Module) -> dict[str, bool]:
    """Whether each parameter should decay, decided by what it is (its module and name)."""
    decay = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            is_bias = name.endswith("bias")  # nn.Linear's bias, attention's in_proj_bias
            is_norm = isinstance(module, NORMS)
            is_embedding = isinstance(module, nn.Embedding) or "embedding" in name  # token, position, class
            is_temperature = name == "logit_scale"
            decay[full] = not (is_bias or is_norm or is_embedding or is_temperature)
    return decay


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    extra = {"fusion": {"num_heads": 4, "layer_statistics": True}}
    return build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion="token", prompt_context=2, extra=extra))


def test_no_decay_on_biases_norms_embeddings_and_temperatures(model):
    optimizer = build_optimizer(model, backbone_lr=1e-5, head_lr=1e-3, weight_decay=0.05)
    names = {id(p): name for name, p in model.named_parameters()}
    grouped = {}
    for group in optimizer.param_groups:
        part, decays = group["name"].split("/")
        assert group["lr"] == (1e-5 if part == "backbone" else 1e-3), group["name"]
        assert group["weight_decay"] == (0.05 if decays == "decay" else 0.0), group["name"]
        for p in group["params"]:
            name = names[id(p)]
            assert name.startswith("backbone.") == (part == "backbone"), name
            grouped[name] = decays == "decay"
    expected = expected_decay(model)
    assert grouped == expected
    # The classes the rule must cover are all in this model.
    for name in ("logit_scale", "backbone.logit_scale", "backbone.token_embedding.weight", "backbone.positional_embedding",
                 "backbone.visual.class_embedding", "backbone.visual.ln_pre.weight", "fusion.mlp.0.bias",
                 "fusion.image_to_text.attention.in_proj_bias", "fusion.text_to_image.norm_query.weight"):  # fmt: skip
        assert not grouped[name], name
    for name in ("backbone.visual.conv1.weight", "backbone.text_projection", "fusion.mlp.0.weight",
                 "fusion.image_to_text.attention.in_proj_weight", "fusion.statistics.image_layer_statistics.projection.weight",
                 "prompt_context.vectors"):  # fmt: skip
        assert grouped[name], name


def test_frozen_parameters_are_left_out(model):
    frozen = build_mtpg(model.config)
    apply_freeze_policy(frozen.backbone, "frozen")
    optimizer = build_optimizer(frozen, backbone_lr=1e-5, head_lr=1e-3)
    trainable = {id(p) for p in frozen.parameters() if p.requires_grad}
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_groups == trainable and not any(g["name"].startswith("backbone/") for g in optimizer.param_groups)
