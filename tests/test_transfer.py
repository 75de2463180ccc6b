"""An AesNet image encoder (an open_clip tower) starting MTPG-AIAA's and CG-IAA's image
towers through ``init_from`` (``backbone/transfer.py``): every tensor arrives, anything
else is refused in one line."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import compose_config
from mtpg_aiaa.backbone.convert import CheckpointError
from mtpg_aiaa.backbone.transfer import (
    AesNetTower,
    encoder_activation,
    is_aesnet_encoder_file,
    load_image_tower,
    read_aesnet_tower,
)
from mtpg_aiaa.backbone.longclip import get_arch
from mtpg_aiaa.engine.builders import build_training_model
from mtpg_aiaa.models.aesnet import AesNetConfig, AesNetPretrainModel
from mtpg_aiaa.models.aesnet.encoders import ImageEncoder, save_backbone
from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer

TINY = "open_clip:LongCLIP-tiny"


def _encoder(name: str = TINY, seed: int = 3) -> ImageEncoder:
    torch.manual_seed(seed)
    encoder = ImageEncoder(name)
    with torch.no_grad():  # trained-looking weights, unlike any fresh initialisation
        for parameter in encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return encoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aesnet")
    return save_backbone(_encoder(), folder / "backbone.safetensors")


def _assert_tower_equals(visual: torch.nn.Module, exported_path) -> None:
    stored = {k[len("visual."):]: v for k, v in load_file(str(exported_path)).items()}
    own = visual.state_dict()
    assert set(own) == set(stored)
    for key, value in own.items():
        assert torch.equal(value, stored[key]), key


def test_mtpg_init_from_an_exported_aesnet_backbone_loads_the_image_tower_only(exported):
    group = compose_config("train", "model=tiny").model
    torch.manual_seed(0)
    fresh = build_training_model(group)
    torch.manual_seed(0)
    model = build_training_model(group, str(exported))
    _assert_tower_equals(model.backbone.visual, exported)
    assert not torch.equal(fresh.backbone.visual.conv1.weight, model.backbone.visual.conv1.weight)
    for key, value in fresh.state_dict().items():  # text tower, fusion, prompts: as built
        if not key.startswith("backbone.visual."):
            assert torch.equal(model.state_dict()[key], value), key


def test_cgiaa_scorer_takes_the_tower_from_a_pretraining_last_pt(tmp_path):
    """A pretraining run's training checkpoint: ``backbone.model.*`` is the tower; the frozen
    reference copy, heads and temperatures are not."""
    encoder_config = AesNetConfig(encoder=TINY, embed_dim=16, hidden_dim=16, reference=True)
    torch.manual_seed(1)
    pretrain = AesNetPretrainModel(encoder_config, torch.randn(len(encoder_config.attributes), 64))
    with torch.no_grad():
        for parameter in pretrain.backbone.parameters():
            parameter.add_(1.0)  # the trained encoder now differs from its frozen reference
    config = {"task": {"name": "aesnet/pretrain", "model": {"encoder": TINY}}}
    state = {"model": pretrain.state_dict(), "optimizer": {}, "step": 2, "scheduler": {}, "epoch": 0,
             "batch_in_epoch": 0, "config": config}  # fmt: skip
    torch.save(state, tmp_path / "last.pt")
    assert is_aesnet_encoder_file(tmp_path / "last.pt")
    scorer = build_cgiaa_scorer(clip="LongCLIP-tiny")
    text_before = scorer.clip.token_embedding.weight.clone()
    scorer.load_image_tower(tmp_path / "last.pt")
    for key, value in scorer.clip.visual.state_dict().items():
        assert torch.equal(value, pretrain.backbone.model.state_dict()[key]), key
        if value.is_floating_point() and value.numel() > 1:
            assert not torch.equal(value, pretrain.reference.model.state_dict()[key]), key
    assert torch.equal(scorer.clip.token_embedding.weight, text_before)


def test_cgiaa_model_init_from_an_aesnet_export(exported):
    """``task=cgiaa/score init_from=<AesNet backbone.safetensors>``: the scorer the one builder makes."""
    from omegaconf import OmegaConf

    group = OmegaConf.create({"_target_": "mtpg_aiaa.models.cgiaa.scorer.build_cgiaa_scorer", "clip": "LongCLIP-tiny"})
    _assert_tower_equals(build_training_model(group, str(exported)).clip.visual, exported)


def test_another_width_or_patch_size_is_refused_naming_both(tmp_path):
    path = save_backbone(_encoder("open_clip:LongCLIP-toy"), tmp_path / "backbone.safetensors")
    scorer = build_cgiaa_scorer(clip="LongCLIP-tiny")
    with pytest.raises(CheckpointError) as caught:
        scorer.load_image_tower(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "open_clip:LongCLIP-toy (ViT width 128, 4 layers, patch 8" in message  # the AesNet side
    assert "CG-IAA's CLIP image tower (ViT width 64, 2 layers, patch 32" in message  # the target


def test_a_plain_gelu_open_clip_tower_is_refused_even_where_shapes_fit(exported):
    assert encoder_activation("open_clip:ViT-B-32") == "GELU"
    assert encoder_activation("open_clip:ViT-B-32-quickgelu") == "QuickGELU"
    tower = read_aesnet_tower(exported)
    relabelled = AesNetTower(tower.tensors, "open_clip:ViT-B-32", "relabelled.safetensors")
    model = build_training_model(compose_config("train", "model=tiny").model)
    expected = r"ViT-B-32 \(.*GELU\) does not fit MTPG-AIAA's image tower \(.*QuickGELU\)"
    with pytest.raises(CheckpointError, match=expected):
        load_image_tower(model.backbone.visual, relabelled, expected_arch=get_arch("LongCLIP-tiny"),
                         target="MTPG-AIAA's image tower")


def test_a_partial_tower_is_refused_and_nothing_is_loaded(exported, tmp_path):
    state = load_file(str(exported))
    del state["visual.transformer.resblocks.1.mlp.c_fc.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path), metadata={"library": "open_clip", "model": "LongCLIP-tiny"})
    model = build_training_model(compose_config("train", "model=tiny").model)
    before = {k: v.clone() for k, v in model.backbone.visual.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"refusing a partial load .* 1 of 32 tensors missing"):
        model.load_image_tower(path)
    for key, value in model.backbone.visual.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_timm_encoder_is_refused(tmp_path):
    path = save_backbone(ImageEncoder("timm:test_resnet"), tmp_path / "backbone.safetensors")
    assert is_aesnet_encoder_file(path)
    model = build_training_model(compose_config("train", "model=tiny").model)
    with pytest.raises(CheckpointError, match="timm:test_resnet is not an open_clip ViT tower"):
        model.load_image_tower(path)
