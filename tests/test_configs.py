"""Every config group composes, and the instantiable groups instantiate."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mtpg_aiaa.engine.freezing import FREEZE_KEYS
from mtpg_aiaa.models.mtpg.factory import mtpg_config
from mtpg_aiaa.models.mtpg.model import build_mtpg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


MTPG_MODELS = [f"mtpg/{name}" for name in group_options("model/mtpg")]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("model", MTPG_MODELS)
@pytest.mark.parametrize("data", group_options("data"))
@pytest.mark.parametrize("stage", group_options("stage"))
def test_every_stage_model_data_composes(stage, model, data):
    paths = ["data.root=/data/x"] if data == "baid" else ["data.csv=/d/x.csv", "data.image_root=/d/img"]
    cfg = compose_train(f"stage={stage}", f"model={model}", f"data={data}", *paths)
    assert cfg.stage.name == stage and cfg.model.fusion in ("official", "token", "none")
    OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("model", MTPG_MODELS)
def test_model_groups_build(model):
    cfg = compose_train(f"model={model}")
    with torch.device("meta"):  # full-size backbones without allocating them
        keys = {k: v for k, v in cfg.model.items() if not k.startswith("_") and k not in (*FREEZE_KEYS, "backbone_weights")}
        built = build_mtpg(mtpg_config(**keys))
    assert built.config.backbone == cfg.model.backbone


def test_optim_sched_and_logger_groups_instantiate(tmp_path):
    cfg = compose_train()
    model = torch.nn.Linear(4, 4)
    optimizer = instantiate(cfg.optim)(model)
    scheduler = instantiate(cfg.sched)(optimizer, total_steps=10)
    assert scheduler.get_last_lr()[0] == pytest.approx(cfg.optim.head_lr / cfg.sched.warmup_steps)
    for logger in group_options("logger"):
        logger_cfg = compose_train(f"logger={logger}").logger
        if "project" in logger_cfg:
            logger_cfg.mode = "disabled"
        instantiate(logger_cfg)(run_dir=tmp_path / logger).close()


def test_debug_and_test_configs_compose():
    assert compose_train("debug=fast").trainer.max_steps == 2
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        assert compose("test", overrides=["ckpt=x"]).eval.batch_size == 16


def test_paper_defaults():
    cfg = compose_train()
    assert cfg.model.backbone == "LongCLIP-L-14" and cfg.seed == 20240716
    assert cfg.trainer.epochs == 5 and cfg.trainer.batch_size == 16 and cfg.optim.backbone_lr == 5e-6


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_experiments_compose_and_resolve(experiment):
    cfg = compose_train(f"experiment={experiment}")
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.stage.name in group_options("stage") and cfg.task._target_.endswith(f"build_{cfg.stage.name}_task")


def test_quickstart_chains_the_stages():
    pretrain, finetune = compose_train("experiment=quickstart_pretrain"), compose_train("experiment=quickstart")
    assert (pretrain.stage.name, finetune.stage.name) == ("pretrain", "finetune")
    assert pretrain.init_from is None
    assert finetune.init_from == f"{finetune.paths.output_root}/train/{pretrain.run_name}"
    assert pretrain.model.backbone == finetune.model.backbone == "LongCLIP-toy"


def record_build(**kwargs):
    """A model ``_target_`` that returns what it was called with (see the test below)."""
    model = torch.nn.Linear(2, 2)
    model.received = kwargs
    model.set_freeze = lambda policy, last_n: setattr(model, "frozen_as", (policy, last_n))
    return model


def test_freeze_keys_reach_the_model_only_through_set_freeze():
    from mtpg_aiaa.engine.builders import build_training_model

    group = OmegaConf.create({"_target_": f"{__name__}.record_build", "width": 3, "freeze": "last_n", "freeze_last_n": 2})
    model = build_training_model(group)
    assert model.received == {"width": 3} and model.frozen_as == ("last_n", 2)


def test_every_model_says_what_freezing_means():
    from mtpg_aiaa.errors import SettingError
    from mtpg_aiaa.models.aesnet import AesNetScorer, AesNetScorerConfig
    from mtpg_aiaa.models.cgiaa.scorer import build_cgiaa_scorer

    scorer = AesNetScorer(AesNetScorerConfig(encoder="timm:test_resnet", image_size=32))
    scorer.set_freeze("frozen")
    assert scorer.scorer_config.frozen_backbone and not any(p.requires_grad for p in scorer.backbone.parameters())
    assert not scorer.train().backbone.training and scorer.head.weight.requires_grad
    scorer.set_freeze("full")
    assert all(p.requires_grad for p in scorer.backbone.parameters()) and scorer.train().backbone.training
    with pytest.raises(SettingError, match="model.freeze=last_n is not available for an AesNet scorer"):
        scorer.set_freeze("last_n")
    cgiaa = build_cgiaa_scorer(clip="LongCLIP-tiny")
    cgiaa.set_freeze("frozen")
    assert not any(p.requires_grad for p in cgiaa.clip.parameters()) and cgiaa.head.weight.requires_grad
    cgiaa.set_freeze("last_n", 1)
    assert cgiaa.clip.visual.transformer.resblocks[-1].attn.in_proj_weight.requires_grad
    assert not cgiaa.clip.visual.transformer.resblocks[0].attn.in_proj_weight.requires_grad
    with pytest.raises(SettingError, match="model.freeze must be one of"):
        cgiaa.set_freeze("partial")
