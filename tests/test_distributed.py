"""Distributed runs on CPU (gloo): torchrun DDP equals one process with the global batch,
distributed test.py equals the single-process predictions, the submitit launcher trains,
and a pre-empted run resumes at its saved step."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DistributedSampler

from helpers import ROOT, compose_config, load_script
from mtpg_aiaa.engine import trainer as trainer_module
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.distributed import gather_with_grad, shard_batches
from mtpg_aiaa.engine.sampling import ResumableSampler
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

evaluate = load_script("test.py").evaluate
train = load_script("train.py").train

# One intra-op thread per process: what torchrun sets by default, and what makes a
# process's float reductions independent of how many cores the machine has. CPU (gloo) runs
# by design: the commands must not pick a GPU through device=auto (tests/conftest.py).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
       "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    return make_smoke(16, seed=4)


def train_overrides(smoke: dict, out: Path, stage: str, batch_size: int, *extra: str) -> list[str]:
    # Deterministic views, so both runs see identical pixels; pretrain skips its view metrics.
    per_stage = ["stage.val_matching_images=0"] if stage == "pretrain" else ["stage.augment=false"]
    return [
        f"stage={stage}", "model=tiny", "data=csv", f"data.train_csv={smoke['csv']}", f"data.val_csv={smoke['csv']}",
        f"data.image_root={smoke['image_root']}", "debug=fast", f"trainer.batch_size={batch_size}",
        "trainer.max_steps=3", "sched.warmup_steps=1", "optim.backbone_lr=1e-4", "optim.head_lr=1e-3",
        # eps 1e-4: Adam rescales gradients that are zero up to rounding (attention key biases)
        # into full-size steps; a larger eps keeps those at rounding size, so the comparison
        # below checks every parameter to fp tolerance.
        "optim.eps=1e-4", "model.freeze=full", f"paths.output_root={out}", "run_name=run", *per_stage, *extra,
    ]  # fmt: skip


def torchrun(script: str, overrides: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *overrides]
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


# -- pieces ---------------------------------------------------------------------------
def test_resumable_sampler_is_distributed_sampler_order():
    dataset = list(range(11))
    for rank in range(3):
        ours = ResumableSampler(dataset, seed=7, rank=rank, world_size=3)
        reference = DistributedSampler(dataset, num_replicas=3, rank=rank, shuffle=True, seed=7)
        ours.set_epoch(2, skip=1)
        reference.set_epoch(2)
        assert list(ours) == list(reference)[1:]


def test_whole_batches_are_dealt_round_robin():
    shards = [shard_batches(10, 4, rank, 2) for rank in range(2)]
    assert shards == [[[0, 1, 2, 3], [8, 9]], [[4, 5, 6, 7]]]
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(10))


def test_gather_is_identity_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x


def test_signal_is_handed_on_after_the_checkpoint():
    received = []
    previous = {signal.SIGUSR2: lambda signum, frame: received.append(signum), signal.SIGINT: signal.default_int_handler}
    trainer_module._chain_previous_handler(signal.SIGUSR2, previous)
    trainer_module._chain_previous_handler(signal.SIGINT, previous)  # Ctrl-C: no KeyboardInterrupt after saving
    assert received == [signal.SIGUSR2]


# -- torchrun --------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
def test_two_process_ddp_equals_one_process_with_the_global_batch(smoke, tmp_path, stage):
    train(compose_config("train", *train_overrides(smoke, tmp_path / "one", stage, batch_size=4)))
    torchrun("train.py", train_overrides(smoke, tmp_path / "two", stage, batch_size=2))
    one = load_training_state(tmp_path / "one" / "train" / "run" / "last.pt")
    two = load_training_state(tmp_path / "two" / "train" / "run" / "last.pt")
    assert one["step"] == two["step"] == 3
    assert not any(name.startswith("module.") for name in two["model"]), "checkpoints hold the unwrapped model"
    initial = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny")).state_dict()
    moved = 0
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=2e-6, msg=key)
        moved += key in initial and initial[key].shape == value.shape and not torch.equal(initial[key], value)
    assert moved > 10, "training should have changed the weights"
    # Only rank 0 writes the history, so it has the single process's rows.
    rows = [(path / "train" / "run" / "metrics.jsonl").read_text().count("\n") for path in (tmp_path / "one", tmp_path / "two")]
    assert rows[0] == rows[1]


def test_distributed_test_py_equals_one_process_with_official_batches(smoke, official_ckpt, tmp_path, torch_threads):
    overrides = [f"ckpt={official_ckpt}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
                 "eval.batch_size=3", "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=0"]  # fmt: skip
    # Same batches give the same numbers only with the same kernels: a float sum split over
    # two threads rounds differently from one over one thread (last digit of a prediction).
    # The ranks run with one thread each (ENV), so the single process does too.
    torch_threads(1)
    evaluate(compose_config("test", *overrides), tmp_path / "one")
    torchrun("test.py", [*overrides, f"hydra.run.dir={tmp_path / 'two'}"])
    one = (tmp_path / "one" / "predictions.csv").read_text()
    assert (tmp_path / "two" / "predictions.csv").read_text() == one
    # and the batches really matter: scoring every image alone gives other numbers
    evaluate(compose_config("test", *overrides, "eval.batching=per_image"), tmp_path / "alone")
    assert (tmp_path / "alone" / "predictions.csv").read_text() != one


# -- SLURM through submitit, pre-emption -------------------------------------------------
def test_submitit_local_launcher_completes_a_training(smoke, tmp_path):
    overrides = train_overrides(smoke, tmp_path, "finetune", 4, "trainer.max_steps=2")
    command = [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load_training_state(tmp_path / "train" / "run" / "last.pt")["step"] == 2


def test_preempted_run_resumes_at_its_saved_step(smoke, tmp_path):
    command = [sys.executable, "train.py", *train_overrides(smoke, tmp_path, "finetune", 2, "trainer.max_steps=12",
                                                             "trainer.save_every=1")]  # fmt: skip
    run = tmp_path / "train" / "run"
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (run / "last.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # what SLURM sends on pre-emption
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output[-3000:]
    saved = load_training_state(run / "last.pt")["step"]
    assert 0 < saved < 12, output[-2000:]
    resumed = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {saved} " in resumed.stdout + resumed.stderr
    assert load_training_state(run / "last.pt")["step"] == 12


def test_slurm_launcher_takes_cluster_values_from_local_config():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "+local.slurm.partition=gpu-long",
                                          "+local.slurm.gpus_per_node=4", "+local.slurm.nodes=2"],
                      return_hydra_config=True)  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == ("gpu-long", 2, 4, 4)
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0  # requeue after time limits


def test_run_stamp_is_shared_by_the_processes_of_one_launch(monkeypatch):
    from mtpg_aiaa.engine.run_names import run_stamp

    monkeypatch.delenv("MTPG_RUN_STAMP", raising=False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "3f2a9c1d77aa")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_stamp() == "torchrun-3f2a9c1d"
    monkeypatch.setenv("MTPG_RUN_STAMP", "slurm123")
    assert run_stamp() == "slurm123"
