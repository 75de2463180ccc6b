"""Starting a training from earlier weights (``init_from``): the authors' released layout,
one of our ``.safetensors`` files, a stage-1 run handing its fusion over to stage 2, and the
same setting for CG-IAA and AesNet (their runs: tests/test_aesnet_tasks.py)."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from helpers import compose_config, load_script, tiny_train_overrides
from mtpg_aiaa.backbone import CheckpointError
from mtpg_aiaa.engine.builders import build_training_model, external_weight_keys
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.models.mtpg.fusion.token import StandardizedProjection

train = load_script("train.py").train
STATISTICS = ("model.fusion=token", "model.fusion_layer_statistics=true", "model.fusion_description_statistics=true")


def model_group(*overrides: str):
    return compose_config("train", "model=tiny", *overrides).model


def test_init_from_the_released_layout_loads_backbone_head_and_temperature(official_ckpt, tmp_path):
    raw = torch.load(official_ckpt, map_location="cpu", weights_only=True)  # the file as the authors' demo reads it
    raw["logit_scale"] = torch.tensor(3.0)  # a trained head temperature, unlike the backbone's unused one
    torch.save(raw, tmp_path / "model_save.pt")
    model = build_training_model(model_group("model.fusion=official"), str(tmp_path / "model_save.pt"))
    assert torch.equal(model.backbone.visual.conv1.weight, raw["model.visual.conv1.weight"])
    assert torch.equal(model.backbone.token_embedding.weight, raw["model.token_embedding.weight"])
    assert torch.equal(model.backbone.positional_embedding, raw["model.positional_embedding"])
    for layer in ("fc1", "mlp", "query_text", "key_text_s_2", "exband2", "ffn.2"):  # dead layers travel too
        module = model.fusion.get_submodule(layer)
        assert torch.equal(module.weight, raw[f"{layer}.weight"]) and torch.equal(module.bias, raw[f"{layer}.bias"]), layer
    assert torch.equal(model.logit_scale, raw["logit_scale"])  # the head's temperature, not model.logit_scale
    assert not torch.equal(model.logit_scale, raw["model.logit_scale"])


def test_init_from_the_released_layout_into_token_fusion_keeps_a_fresh_head(official_ckpt):
    torch.manual_seed(0)
    fresh = build_training_model(model_group("model.fusion=token"))
    torch.manual_seed(0)
    model = build_training_model(model_group("model.fusion=token"), str(official_ckpt))
    raw = torch.load(official_ckpt, map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.visual.conv1.weight, raw["model.visual.conv1.weight"])
    assert not torch.equal(fresh.backbone.visual.conv1.weight, raw["model.visual.conv1.weight"])
    for key, value in fresh.fusion.state_dict().items():  # nothing of the released head fits this fusion
        assert torch.equal(model.fusion.state_dict()[key], value), key


def test_init_from_our_safetensors_loads_every_tensor(make_smoke):
    source = make_smoke(2, seed=5)["ckpt"]
    model = build_training_model(model_group("model.fusion=official", "model.prompts=clean"), str(source))
    stored = load_file(str(source))
    assert set(stored) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key


def test_init_from_another_architecture_is_refused(official_ckpt):
    # Only the unused scalar backbone.logit_scale has the same shape in both.
    with pytest.raises(CheckpointError, match=r"backbone does not match .*\(1 of \d+ backbone tensors fit"):
        build_training_model(compose_config("train", "model=toy", "model.backbone_weights=null").model, str(official_ckpt))


@pytest.mark.slow  # two tiny stages, ~10 s
def test_stage_one_trains_the_fusion_on_standardised_statistics_and_stage_two_keeps_them(
    make_smoke, tmp_path, monkeypatch
):
    """Stage 1's preference loss trains the fusion, so the standardisation of the statistics it
    reads is fitted before the first step; stage 2 then keeps it with the fusion weights
    learnt under it rather than refitting it under them."""
    smoke = make_smoke(8, seed=3)
    fitted_when_trained = []
    forward = StandardizedProjection.forward

    def recording_forward(self, values):
        if torch.is_grad_enabled():
            fitted_when_trained.append(bool(self.fitted))
        return forward(self, values)

    monkeypatch.setattr(StandardizedProjection, "forward", recording_forward)
    stage_one = tmp_path / "one"
    train(compose_config("train", *tiny_train_overrides(smoke, stage_one, "stage=pretrain", "stage.val_matching_images=0",
                                                        *STATISTICS)))  # fmt: skip
    assert fitted_when_trained and all(fitted_when_trained)
    run = stage_one / "train" / "run"
    handed_over = load_training_state(run / "last.pt")["model"]
    fusion_keys = [key for key in handed_over if key.startswith("fusion.statistics.")]
    assert {key.split(".")[2] for key in fusion_keys} == {"image_layer_statistics", "text_layer_statistics"}
    assert all(bool(handed_over[key]) for key in fusion_keys if key.endswith(".fitted"))

    cfg = compose_config("train", *tiny_train_overrides(smoke, tmp_path / "two", "stage=finetune", f"init_from={run}",
                                                        *STATISTICS))  # fmt: skip
    model = build_training_model(cfg.model, cfg.init_from)
    instantiate(cfg.task, model=model)  # where stage 2 fits an unfitted standardisation
    state = model.state_dict()
    for key in fusion_keys:
        assert torch.equal(state[key], handed_over[key]), key


def test_standardisation_rows_are_a_seeded_sample_not_the_first_rows():
    from mtpg_aiaa.engine.tasks.mtpg.standardization import sample_rows

    assert sample_rows(5, 8, seed=0) == [0, 1, 2, 3, 4]
    rows = sample_rows(1000, 50, seed=3)
    assert rows == sample_rows(1000, 50, seed=3) != sample_rows(1000, 50, seed=4)
    assert rows == sorted(set(rows)) and len(rows) == 50 and rows[-1] > 50  # spread over the table


def test_init_from_starts_a_cgiaa_scorer_and_replaces_its_external_clip(tmp_path):
    """A CG-IAA scorer of ours starts a new one with another head: CLIP loaded, the head fresh,
    and ``model.clip_weights`` (an external file, here absent) not read."""
    from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer

    torch.manual_seed(1)
    source = build_cgiaa_scorer(clip="LongCLIP-tiny")
    source.save(tmp_path / "vlap.safetensors")
    group = compose_config("train", "task=cgiaa/score", "model.clip=LongCLIP-tiny", "model.bins=10",
                           f"model.clip_weights={tmp_path / 'absent.pt'}").model  # fmt: skip
    model = build_training_model(group, str(tmp_path / "vlap.safetensors"))
    for key, value in source.clip.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], value), key
    assert model.head.out_features == 10 and all(p.requires_grad for p in model.clip.parameters())
    with pytest.raises(CheckpointError, match="no tensor matches CritiqueExpert"):
        expert = compose_config("train", "task=cgiaa/expert", "model.clip_dim=32", "model.num_layers=1").model
        build_training_model(expert, str(tmp_path / "vlap.safetensors"))


def test_init_from_keeps_the_weights_of_parts_no_run_holds():
    """AesNet pretraining's frozen text tower is not in its weights: ``init_from`` replaces the
    encoder's external file only."""
    aesnet = OmegaConf.to_container(compose_config("train", "task=aesnet/pretrain").model, resolve=True)
    assert external_weight_keys(aesnet) == ["encoder_weights"]
    mtpg = OmegaConf.to_container(model_group(), resolve=True)
    assert external_weight_keys(mtpg) == ["backbone_weights"]


CALLS = []


def record_call(**kwargs):
    """A ``_target_`` planted in a weights file's run config: calling it would be the bug."""
    CALLS.append(kwargs)


def test_no_target_is_read_from_the_init_from_file(tmp_path):
    """``init_from`` takes tensors from a training checkpoint, never the ``_target_`` its run
    config names (nor any other of its keys)."""
    group = model_group("model.fusion=official")
    source = build_training_model(group)
    planted = {"_target_": f"{__name__}.record_call", "backbone_weights": str(tmp_path / "elsewhere.pt")}
    torch.save({"model": source.state_dict(), "optimizer": {}, "scheduler": {}, "step": 1, "epoch": 0,
                "batch_in_epoch": 0, "config": {"model": planted, "task": {"_target_": f"{__name__}.record_call"}}},
               tmp_path / "last.pt")  # fmt: skip
    model = build_training_model(group, str(tmp_path))
    assert not CALLS and type(model) is type(source)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_aesnet_pretraining_from_a_run_fills_its_reference_encoder_whole(tmp_path):
    """``affinity=preserve`` compares with a frozen reference encoder: ``init_from`` must bring
    one (a run without it is refused), never leave it at random initialisation."""
    def group(affinity):
        return compose_config("train", "task=aesnet/pretrain", f"task.affinity={affinity}", "model.encoder=timm:test_resnet",
                              "model.image_size=32", "model.text_backbone=LongCLIP-tiny", "model.attributes=[color,lighting]",
                              "model.embed_dim=16", "model.hidden_dim=32").model  # fmt: skip

    def save_run(model, name):
        torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "step": 1, "epoch": 0,
                    "batch_in_epoch": 0, "config": {}}, tmp_path / name)  # fmt: skip
        return str(tmp_path / name)

    torch.manual_seed(2)
    with_reference = build_training_model(group("preserve"))
    model = build_training_model(group("preserve"), save_run(with_reference, "preserve.pt"))
    for key, value in with_reference.reference.state_dict().items():
        assert torch.equal(model.reference.state_dict()[key], value), key
    without = save_run(build_training_model(group("restrain")), "restrain.pt")
    with pytest.raises(CheckpointError, match=r"the reference does not match .*\(0 of \d+ reference tensors fit"):
        build_training_model(group("preserve"), without)
