"""AesNet's tasks through train.py on a few-row fake: pretraining resumes exactly, its
backbone starts a linear probe and a finetune, the new metrics are right."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.tasks import list_tasks
from mtpg_aiaa.models.aesnet import load_scorer as load_model_file
from mtpg_aiaa.eval.metrics import emd, rmse
from mtpg_aiaa.models.aesnet.model import INITIAL_LOGIT_SCALE
from aesnet_fakes import ATTRIBUTES, write_multitext_table

from helpers import ROOT, load_script

train = load_script("train.py").train


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_multitext_table(tmp_path_factory.mktemp("aesnet_tasks"), rows=12)


def config(task: str, fake: dict, out: Path, *extra: str):
    attributes = "[" + ",".join(ATTRIBUTES) + "]"
    common = [f"task={task}", f"task.data.table={fake['table']}", f"task.data.image_root={fake['image_root']}",
              "model.encoder=timm:test_resnet", "model.image_size=32", f"paths.output_root={out}",
              "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.log_every=1",
              "sched.warmup_steps=1", "trainer.save_every=1"]  # fmt: skip
    if task == "aesnet/pretrain":
        common += ["model.text_backbone=LongCLIP-tiny", f"model.attributes={attributes}",
                   "model.embed_dim=16", "model.hidden_dim=32"]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=[*common, *extra])


def test_tasks_are_registered():
    assert {"aesnet/pretrain", "aesnet/finetune", "aesnet/probe"} <= set(list_tasks())


@pytest.mark.slow
@pytest.mark.parametrize("affinity", ["preserve"])
def test_pretraining_resumes_exactly(fake, tmp_path, affinity):
    # A constant learning rate: the stopped run's schedule (max_steps=2) then equals the whole one's.
    constant = ("sched.warmup_steps=0", "sched.min_lr_ratio=1.0")
    whole = train(config("aesnet/pretrain", fake, tmp_path, "run_name=whole", "trainer.max_steps=4",
                         f"task.affinity={affinity}", *constant))  # fmt: skip
    assert "val/retrieval" in whole and "val/retrieval/color" in whole
    train(config("aesnet/pretrain", fake, tmp_path, "run_name=split", "trainer.max_steps=2", f"task.affinity={affinity}",
                 *constant))
    train(config("aesnet/pretrain", fake, tmp_path, "run_name=split", "trainer.max_steps=4", f"task.affinity={affinity}",
                 *constant))
    first = load_training_state(tmp_path / "train" / "whole" / "last.pt")
    second = load_training_state(tmp_path / "train" / "split" / "last.pt")
    assert first["step"] == second["step"] == 4
    for key, value in first["model"].items():
        assert torch.allclose(value, second["model"][key], atol=1e-6), key
    assert (tmp_path / "aesnet_text_features.safetensors").is_file()


@pytest.mark.slow
def test_pretrained_backbone_starts_probe_and_finetune(fake, tmp_path):
    train(config("aesnet/pretrain", fake, tmp_path, "run_name=pre", "trainer.max_steps=2", "task.affinity=restrain"))
    pretrained = load_training_state(tmp_path / "train" / "pre" / "last.pt")["model"]
    probe = train(config("aesnet/probe", fake, tmp_path, "run_name=probe", "trainer.max_steps=2",
                         f"init_from={tmp_path / 'train' / 'pre'}"))  # fmt: skip
    assert {"val/srcc", "val/plcc", "val/acc", "val/rmse"} <= set(probe)
    probed = load_training_state(tmp_path / "train" / "probe" / "last.pt")["model"]
    for key, value in pretrained.items():  # the probe never moved the pretrained backbone
        if key.startswith("backbone.") and key in probed and value.is_floating_point():
            assert torch.equal(probed[key], value), key
    tuned = train(config("aesnet/finetune", fake, tmp_path, "run_name=ft", "trainer.max_steps=2",
                         "model.head=distribution", "model.score_low=1", "model.score_high=10",
                         f"init_from={tmp_path / 'train' / 'pre' / 'last.pt'}"))  # fmt: skip
    assert {"val/emd1", "val/emd2", "val/srcc"} <= set(tuned)
    export_run = load_script("scripts/export_aesnet.py").export_run
    written = export_run(tmp_path / "train" / "ft")
    scorer = load_model_file(written[0])
    assert scorer.scorer_config.head == "distribution"
    torch.testing.assert_close(scorer.head.weight, load_training_state(tmp_path / "train" / "ft" / "last.pt")["model"]["head.weight"])
    assert export_run(tmp_path / "train" / "pre")[0].name == "backbone.safetensors"
    # test.py scores the exported scorer through the registry (content-based loading), with
    # its 10-bin distribution beside the score.
    evaluate = load_script("test.py").evaluate
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("test", overrides=[f"ckpt={written[0]}", f"data.csv={fake['table']}",
                                         f"data.image_root={fake['image_root']}", "data.score_scale=10",
                                         "eval.num_workers=0", "eval.n_bootstrap=0", "eval.progress=false"])  # fmt: skip
    metrics = evaluate(cfg, tmp_path / "test")
    assert metrics["system"] == "aesnet" and metrics["n_skipped"] == 0
    table = pd.read_csv(tmp_path / "test" / "predictions.csv")
    assert len(table) == 12 and [c for c in table.columns if c.startswith("dist_")]


def test_rmse_and_emd_by_hand():
    assert rmse([1.0, 2.0, 4.0], [1.0, 1.0, 1.0]) == pytest.approx(np.sqrt((0 + 1 + 9) / 3))
    p, t = np.array([[1.0, 0, 0, 0]]), np.array([[0, 0, 0, 2.0]])  # counts are normalised
    assert emd(p, t, r=1) == pytest.approx(3 / 4)
    assert emd(p, t, r=2) == pytest.approx(np.sqrt(3 / 4))
    assert emd(t, t) == 0
    with pytest.raises(ValueError, match="row 0"):
        emd(np.zeros((1, 4)), t)


def overrides(task: str, fake: dict, out: Path, *extra: str) -> list[str]:
    attributes = "[" + ",".join(ATTRIBUTES) + "]"
    return [f"task={task}", f"task.data.table={fake['table']}", f"task.data.image_root={fake['image_root']}",
            "model.image_size=32", f"paths.output_root={out}", "trainer.num_workers=0",
            "trainer.progress=false", "sched.warmup_steps=1", "model.text_backbone=LongCLIP-tiny",
            f"model.attributes={attributes}", "model.embed_dim=16", "model.hidden_dim=32",
            "optim.eps=1e-4", "run_name=run", "trainer.max_steps=2", *extra]  # fmt: skip


@pytest.mark.slow
def test_two_process_pretraining_equals_one_process_with_the_global_batch(fake, tmp_path):
    """InfoNCE negatives and the affinity term are gathered across ranks, so two processes
    with batch 2 take the steps of one with batch 4. ViT (LayerNorm): BatchNorm statistics
    would differ per rank by design."""
    import os
    import subprocess

    extra = ("model.encoder=timm:test_vit", "task.affinity=restrain")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        train(compose("train", overrides=overrides("aesnet/pretrain", fake, tmp_path / "one", "trainer.batch_size=4", *extra)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               *overrides("aesnet/pretrain", fake, tmp_path / "two", "trainer.batch_size=2", *extra)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    one = load_training_state(tmp_path / "one" / "train" / "run" / "last.pt")
    two = load_training_state(tmp_path / "two" / "train" / "run" / "last.pt")
    assert one["step"] == two["step"] == 2
    assert (one["model"]["logit_scales.color"] - INITIAL_LOGIT_SCALE).abs() > 1e-5, "training should move the weights"
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=2e-6, msg=key)


def test_export_reads_run_configs_of_both_layouts():
    """Runs record their model under ``model`` (``configs/model/aesnet/``); runs written before
    recorded it under ``task.model`` with ``task.frozen_backbone``: both export."""
    export = load_script("scripts/export_aesnet.py")
    model_spec, run_kind = export.model_spec, export.run_kind

    new = {"task": {"_target_": "mtpg_aiaa.engine.tasks.aesnet.downstream.build_score_task"},
           "model": {"_target_": "mtpg_aiaa.models.aesnet.build_scorer", "encoder": "timm:x", "freeze": "frozen"}}
    earlier = {"task": {"name": "aesnet/probe", "frozen_backbone": True, "model": {"encoder": "timm:x"}},
               "model": {"_target_": "mtpg_aiaa.models.mtpg.build_mtpg_model", "fusion": "token"}}
    assert run_kind(new) == run_kind(earlier) == "scorer"
    assert model_spec(new) == model_spec(earlier) == ({"encoder": "timm:x"}, True)
    assert run_kind({"task": {"_target_": "mtpg_aiaa.engine.tasks.cgiaa.score.build_score_task"}}) is None
