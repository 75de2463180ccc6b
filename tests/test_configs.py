"""Every config group composes, and the instantiable groups instantiate."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mtpg_aiaa.engine.builders import model_config_from
from mtpg_aiaa.models.mtpg.model import build_mtpg

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def group_options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("model", group_options("model"))
@pytest.mark.parametrize("data", group_options("data"))
@pytest.mark.parametrize("stage", group_options("stage"))
def test_every_stage_model_data_composes(stage, model, data):
    paths = ["data.root=/data/x"] if data == "baid" else ["data.csv=/d/x.csv", "data.image_root=/d/img"]
    cfg = compose_train(f"stage={stage}", f"model={model}", f"data={data}", *paths)
    assert cfg.stage.name == stage and cfg.model.fusion in ("official", "token", "none")
    OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("model", group_options("model"))
def test_model_groups_build(model):
    cfg = compose_train(f"model={model}")
    with torch.device("meta"):  # full-size backbones without allocating them
        built = build_mtpg(model_config_from(cfg.model))
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
    assert cfg.stage.name in group_options("stage")


def test_quickstart_chains_the_stages():
    pretrain, finetune = compose_train("experiment=quickstart_pretrain"), compose_train("experiment=quickstart")
    assert (pretrain.stage.name, finetune.stage.name) == ("pretrain", "finetune")
    assert pretrain.init_from is None
    assert finetune.init_from == f"{finetune.paths.output_root}/train/{pretrain.run_name}"
    assert pretrain.model.backbone == finetune.model.backbone == "LongCLIP-toy"
