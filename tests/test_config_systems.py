"""Every task composes to its own system only, and train.py builds what the configs say.

``python train.py task=<system>/<task>`` is composed for each of the eight tasks; the run's
config (and Hydra's group choices) must hold nothing of another system: no other system's
``_target_``, group or keys, no MTPG-AIAA ``stage``/``data`` in a CG-IAA or AesNet run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import CONFIGS, load_script
from mtpg_aiaa.engine.run_names import register_resolvers

register_resolvers()

SYSTEMS = ("mtpg", "cgiaa", "aesnet")
TASKS = sorted(f"{p.parent.name}/{p.stem}" for p in (CONFIGS / "task").glob("*/*.yaml"))
# Keys only one system's configs have (besides _target_s and groups).
OWN_KEYS = {
    "mtpg": {"stage", "feature_cache", "backbone_weights", "fusion", "prompts", "level_sigma"},
    "cgiaa": {"attribute", "critiques_csv", "critique_dir", "clip_weights", "gpt2_weights", "train_pairs"},
    "aesnet": {"encoder_weights", "text_weights", "affinity", "text_backbone", "integration"},
}


def compose_train(*overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def keys_and_targets(node, keys: set[str], targets: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            keys.add(key)
            if key == "_target_":
                targets.add(value)
            keys_and_targets(value, keys, targets)
    elif isinstance(node, list):
        for value in node:
            keys_and_targets(value, keys, targets)


def target_system(target: str) -> str | None:
    """The system whose folder a ``_target_`` names (None for generic engine code)."""
    parts = target.split(".")
    for system in SYSTEMS:
        if parts[:3] in (["mtpg_aiaa", "models", system], ["mtpg_aiaa", "engine", "tasks"]) and system in parts[2:4]:
            return system
    return None


def test_the_eight_tasks_are_the_config_files():
    from mtpg_aiaa.engine.tasks import list_tasks

    assert TASKS == sorted(["aesnet/finetune", "aesnet/probe", "aesnet/pretrain", "cgiaa/expert", "cgiaa/score",
                            "cgiaa/vlap", "mtpg/finetune", "mtpg/pretrain"]) == list_tasks()  # fmt: skip


@pytest.mark.parametrize("task", TASKS)
def test_a_composed_task_holds_nothing_of_another_system(task):
    system = task.split("/")[0]
    cfg = compose_train(f"task={task}", hydra=True)
    choices = cfg.hydra.runtime.choices
    body = OmegaConf.to_container(cfg, resolve=False)
    body.pop("hydra")
    keys, targets = set(), set()
    keys_and_targets(body, keys, targets)
    systems = {target_system(t) for t in targets} - {None}
    assert systems == {system}, (task, sorted(targets))
    assert cfg.model._target_ and target_system(cfg.model._target_) == system
    assert target_system(cfg.task._target_) == system
    assert choices["model"].startswith(f"{system}/") and choices["task"] == task
    for other in set(SYSTEMS) - {system}:
        assert not (keys & OWN_KEYS[other]), (task, other, sorted(keys & OWN_KEYS[other]))
    if system != "mtpg":  # MTPG-AIAA's groups are absent, not nulled by hand
        assert "data" not in body and "stage" not in body
        assert choices.get("data") is None and choices.get("stage") is None
    run_name = OmegaConf.select(compose_train(f"task={task}"), "run_name")
    assert run_name.startswith(f"{task.split('/')[1]}-" if system == "mtpg" else f"{system}-"), run_name


@pytest.mark.parametrize("old, new", [("model=official", "model=mtpg/official"), ("model=tiny", "model=mtpg/tiny"),
                                      ("model=toy", "model=mtpg/toy"), ("model=longclip_b", "model=mtpg/longclip_b"),
                                      ("stage=pretrain", "task=mtpg/pretrain"), ("stage=finetune", "task=mtpg/finetune")])  # fmt: skip
def test_old_spellings_are_aliases(old, new):
    paths = ("data.root=/d", "run_name=r")
    assert compose_train(old, *paths) == compose_train(new, *paths)
    assert compose_train(old, *paths) != compose_train(*paths) or old == "stage=finetune"


def test_stage_settings_reach_the_task():
    cfg = compose_train("stage=pretrain", "stage.losses.ordering=0.5", "data.root=/d", "run_name=r")
    assert cfg.task._target_.endswith("mtpg.pretrain.build_pretrain_task")
    assert cfg.task.losses.ordering == 0.5 and cfg.task.data.train_csv == "/d/train_set.csv"
    assert compose_train("task=mtpg/pretrain", "data.root=/d", "run_name=r").stage.name == "pretrain"


def test_train_instantiates_the_task_files_target(tmp_path):
    """train.py calls the task file's own ``_target_`` with ``model=`` and the file's keys."""
    train = load_script("train.py")
    cfg = compose_train("task=cgiaa/score", "task._target_=builtins.dict", "task.critiques_csv=c.csv",
                        "task.train_csv=t.csv", "task.val_csv=v.csv", f"task.image_root={tmp_path}")  # fmt: skip
    model = object()
    built = train.build_task(cfg, model)
    assert built["model"] is model and built["critiques_csv"] == "c.csv" and Path(built["image_root"]) == tmp_path
