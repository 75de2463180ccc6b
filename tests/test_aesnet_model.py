"""AesNet's model on tiny random timm / open_clip towers: frozen parts get no gradient,
cached description features give the loss of fresh ones, backbones save in their own
library's layout, scorers round-trip through the registry."""
from __future__ import annotations


import pytest
import torch

from mtpg_aiaa.models import create_model
from mtpg_aiaa.models.aesnet import AesNetConfig, AesNetPretrainModel, attribute_prompt, load_scorer, save_scorer
from mtpg_aiaa.models.aesnet.encoders import ImageEncoder, save_backbone
from mtpg_aiaa.models.aesnet.text import DescriptionFeatureCache, FrozenTextEncoder
from mtpg_aiaa.engine.tasks.aesnet.data import read_attribute_table
from mtpg_aiaa.engine.tasks.aesnet.pretrain import AesNetPretrainTask
from aesnet_fakes import ATTRIBUTES, write_multitext_table


@pytest.fixture(scope="module")
def text_encoder():
    torch.manual_seed(0)
    return FrozenTextEncoder("LongCLIP-tiny")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_multitext_table(tmp_path_factory.mktemp("aesnet"))


def pretrain_model(text_encoder, encoder="timm:test_resnet", reference=True):
    torch.manual_seed(1)
    prompts = text_encoder.encode([attribute_prompt(a) for a in ATTRIBUTES])
    config = AesNetConfig(encoder=encoder, image_size=32 if encoder.startswith("timm") else None, attributes=ATTRIBUTES, embed_dim=16, hidden_dim=32,
                          reference=reference)  # fmt: skip
    return AesNetPretrainModel(config, prompts)


def make_task(model, text_encoder, fake, affinity="preserve", cache_file=None):
    table = read_attribute_table(fake["table"], ATTRIBUTES)
    return AesNetPretrainTask(model, text_encoder, table, None, fake["image_root"], {a: 1.0 for a in ATTRIBUTES},
                              affinity=affinity, affinity_weight=1.0, cache_file=cache_file)  # fmt: skip


@pytest.fixture(scope="module")
def trained(text_encoder, fake, tmp_path_factory):
    """One model (with a reference encoder) and one task whose cache file is written."""
    model = pretrain_model(text_encoder)
    cache_file = tmp_path_factory.mktemp("cache") / "text.safetensors"
    return model, make_task(model, text_encoder, fake, None, str(cache_file)), cache_file


@pytest.mark.parametrize("affinity", ["preserve", "restrain"])
def test_nothing_flows_into_frozen_parts(text_encoder, trained, affinity):
    model, task, _ = trained
    task.affinity, task.affinity_weight = affinity, 1.0
    model.zero_grad(set_to_none=True)
    batch = task.collate([task.train_dataset[i] for i in range(4)])
    losses = task.training_step(model, batch, torch.device("cpu"))
    losses["loss"].backward()
    assert "affinity" in losses and float(losses["affinity"]) > 0
    assert all(p.grad is None for p in text_encoder.parameters())
    assert all(p.grad is None for p in model.reference.parameters())
    assert not any(v.requires_grad for v in task.train_text.features.values())
    trained_parameters = [p for p in model.backbone.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert trained_parameters, "the image encoder must learn"
    assert all(s.grad is not None for s in model.logit_scales.values())


def test_cached_and_fresh_text_features_give_the_same_loss(text_encoder, fake, trained):
    model, _, cache_file = trained
    task = make_task(model, text_encoder, fake, None, str(cache_file))  # reads the features back from the file
    batch = task.collate([task.train_dataset[i] for i in range(6)])
    with torch.no_grad():
        cached = task.training_step(model, batch, torch.device("cpu"))["loss"]
        table = read_attribute_table(fake["table"], ATTRIBUTES)
        rows = table.iloc[batch["index"].tolist()]
        fresh = {a: text_encoder.encode([t or "x" for t in rows[a]]) for a in ATTRIBUTES}
        batch["text"] = {a: v * torch.tensor([bool(t) for t in rows[a]])[:, None] for a, v in fresh.items()}
        assert torch.allclose(task.training_step(model, batch, torch.device("cpu"))["loss"], cached, atol=1e-5)


def test_a_cache_from_another_text_tower_is_refused(text_encoder, tmp_path):
    cache = DescriptionFeatureCache(text_encoder)
    cache.add(["one text", "another"])
    cache.save(tmp_path / "c.safetensors")
    torch.manual_seed(5)
    other = DescriptionFeatureCache(FrozenTextEncoder("LongCLIP-tiny"))
    with pytest.raises(ValueError, match="another text encoder"):
        other.load(tmp_path / "c.safetensors")


@pytest.mark.parametrize("encoder", ["timm:test_vit", "open_clip:LongCLIP-tiny"])
def test_other_image_towers_build_and_embed(text_encoder, encoder):
    model = pretrain_model(text_encoder, encoder, reference=False)
    size = model.backbone.image_size
    out = model(torch.randn(2, 3, size, size), {a: torch.randn(2, 64) for a in ATTRIBUTES})
    assert set(out["image"]) == set(ATTRIBUTES)
    assert torch.allclose(out["image"]["color"].norm(dim=-1), torch.ones(2), atol=1e-5)


def test_timm_backbone_saves_in_timm_layout_and_timm_loads_it(tmp_path):
    import timm

    torch.manual_seed(3)
    encoder = ImageEncoder("timm:test_resnet")
    path = save_backbone(encoder, tmp_path / "backbone.safetensors")
    loaded = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                               pretrained_cfg_overlay={"file": str(path)})  # fmt: skip
    images = torch.randn(2, 3, 32, 32)
    encoder.eval(), loaded.eval()
    assert torch.allclose(loaded(images), encoder(images), atol=1e-6)
    assert ImageEncoder("timm:test_resnet", weights=str(path)).eval()(images).allclose(encoder(images), atol=1e-6)


def test_open_clip_backbone_saves_under_visual(tmp_path):
    from safetensors.torch import load_file

    encoder = ImageEncoder("open_clip:LongCLIP-tiny")
    path = save_backbone(encoder, tmp_path / "visual.safetensors")
    state = load_file(str(path))
    assert state and all(k.startswith("visual.") for k in state)
    again = ImageEncoder("open_clip:LongCLIP-tiny", weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), encoder.state_dict().values()))


def test_a_wrong_backbone_file_is_named(tmp_path):
    path = save_backbone(ImageEncoder("timm:test_resnet"), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="resnet.safetensors"):
        ImageEncoder("timm:test_vit", weights=str(path))


@pytest.mark.parametrize("head", ["regression", "distribution"])
def test_scorer_round_trips_through_the_registry(tmp_path, head):
    scorer = create_model("aesnet", encoder="timm:test_resnet", image_size=32, head=head, score_low=1.0, score_high=10.0).eval()
    images = torch.randn(3, 3, 32, 32)
    out = scorer({"image": images})
    assert ((out["score"] >= 1) & (out["score"] <= 10)).all()
    path = save_scorer(scorer, tmp_path / "scorer.safetensors")
    again = load_scorer(path)
    assert torch.allclose(again({"image": images})["score"], out["score"], atol=1e-6)
    if head == "distribution":
        assert torch.allclose(out["distribution"].sum(-1), torch.ones(3), atol=1e-5)


def test_probe_scorer_keeps_its_backbone_frozen_and_in_eval_mode():
    scorer = create_model("aesnet", encoder="timm:test_resnet", image_size=32, frozen_backbone=True).train()
    assert not scorer.backbone.training and scorer.head.training
    scorer({"image": torch.randn(4, 3, 32, 32)})["score"].sum().backward()
    assert all(p.grad is None for p in scorer.backbone.parameters()) and scorer.head.weight.grad is not None
