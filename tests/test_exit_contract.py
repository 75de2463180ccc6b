"""The one exit contract and the path rules of test.py (issue 21 items 13 and 14, issue 22
item 5): input errors end in one line ``error: ...`` naming the file, row or key, exit 2;
Hydra's own errors too; a failed run leaves no empty run folder; paths stay inside their
root after symlinks; one file is one image however it is spelled; metrics.json is JSON."""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import ROOT, compose_config, load_script
from mtpg_aiaa.data import AestheticsDataset, BadInputError, collate_samples, read_score_table
from mtpg_aiaa.engine.cli_errors import hydra_one_line, one_line, one_line_errors, worker_message
from mtpg_aiaa.engine.trainer import TrainerConfig
from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.json_output import dumps_strict


def to_tensor(image):
    return torch.zeros(3, 2, 2)


def scores_csv(path: Path, rows: list[tuple[str, float]]) -> Path:
    path.write_text("image,score\n" + "".join(f"{name},{score}\n" for name, score in rows))
    return path


# -- item 13: paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("other", ["./0000.jpg", "sub/../0000.jpg", ".//0000.jpg"])
def test_one_file_spelled_two_ways_is_refused_naming_both_rows(tmp_path, other):
    csv = scores_csv(tmp_path / "labels.csv", [("0000.jpg", 5), ("0001.jpg", 6), (other, 7)])
    with pytest.raises(BadInputError, match=rf"image '{other}' appears twice, on lines 2 and 4 \(as '0000.jpg' on line 2\)"):
        read_score_table(csv)


def test_a_symlink_inside_the_image_root_that_leads_out_is_refused(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "secret"
    root.mkdir(), outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "x.png")
    Image.new("RGB", (4, 4)).save(root / "ok.png")
    (root / "link.png").symlink_to(outside / "x.png")
    (root / "folder").symlink_to(outside, target_is_directory=True)
    table = read_score_table(scores_csv(tmp_path / "labels.csv", [("ok.png", 5), ("link.png", 6), ("folder/x.png", 7)]))
    dataset = AestheticsDataset(table, root, to_tensor)
    assert dataset[0]["image_name"] == "ok.png"
    for index in (1, 2):
        with pytest.raises(BadInputError, match=r"resolves to .*secret/x.png, outside the image root .*allow_paths_outside_root=true"):
            dataset[index]
    skipping = AestheticsDataset(table, root, to_tensor, on_bad_image="skip")
    assert skipping[1]["skipped"] and "outside the image root" in skipping[1]["reason"]
    # the table's setting carries to the dataset; the dataset's own argument wins over it
    allowed = read_score_table(tmp_path / "labels.csv", allow_paths_outside_root=True)
    assert AestheticsDataset(allowed, root, to_tensor)[1]["image_name"] == "link.png"
    assert AestheticsDataset(table, root, to_tensor, allow_paths_outside_root=True)[2]["image_name"] == "folder/x.png"
    # a root that is itself a link (data on another disk) is fine: the names stay inside it
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert AestheticsDataset(table, tmp_path / "root-link", to_tensor)[0]["image_name"] == "ok.png"


def test_a_missing_image_read_in_a_worker_is_one_line_naming_the_file(tmp_path):
    table = read_score_table(scores_csv(tmp_path / "labels.csv", [("gone.jpg", 5)]))
    loader = torch.utils.data.DataLoader(AestheticsDataset(table, tmp_path, to_tensor), batch_size=1,
                                         num_workers=1, collate_fn=collate_samples)  # fmt: skip
    with pytest.raises(BadInputError) as caught:
        next(iter(loader))
    assert "Traceback" in str(caught.value)  # torch puts the worker's traceback into the message
    line = one_line(caught.value)
    assert line == f"Image file {tmp_path / 'gone.jpg'} does not exist (table row 0, 0-based, read from {tmp_path / 'labels.csv'})"
    assert worker_message("plain message") == "plain message"


def test_metrics_json_writes_null_for_nan_and_infinity():
    text = dumps_strict({"srcc": float("nan"), "ci": [float("inf"), 0.5], "n": 3, "x": torch.tensor(float("nan"))})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON")) == {
        "srcc": None, "ci": [None, 0.5], "n": 3, "x": None}


@pytest.mark.slow  # one evaluation of the tiny model
def test_test_py_writes_valid_json_for_constant_scores(make_smoke, tmp_path):
    smoke = make_smoke(3, 0)
    names = pd.read_csv(smoke["csv"])["image"].tolist()
    csv = scores_csv(tmp_path / "constant.csv", [(name, 5.0) for name in names])
    cfg = compose_config("test", f"ckpt={smoke['ckpt']}", f"data.csv={csv}", f"data.image_root={smoke['image_root']}",
                         "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=10")  # fmt: skip
    metrics = load_script("test.py").evaluate(cfg, tmp_path / "out")
    assert metrics["plcc"] is None or math.isnan(metrics["plcc"])  # constant scores: no correlation
    written = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert written["srcc"] is None and written["plcc"] is None


# -- item 14: settings, Hydra's errors, disk full --------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"batch_size": 0}, "trainer.batch_size must be at least 1, got 0"),
    ({"batch_size": "abc"}, "trainer.batch_size must be an int, got 'abc' (str)"),
    ({"accumulate": 1.5}, "trainer.accumulate must be an int, got 1.5"),
    ({"max_steps": -1}, "trainer.max_steps must be at least 1"),
    ({"precision": "fp8"}, "trainer.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ({"ema_decay": 1.0}, "trainer.ema_decay must be below 1"),
    ({"progress": "yes"}, "trainer.progress must be a bool"),
    ({"clip_grad_norm": float("nan")}, "trainer.clip_grad_norm must be a finite number"),
])
def test_trainer_settings_are_typed_and_bounded(values, message):
    with pytest.raises(SettingError) as caught:
        TrainerConfig.from_config(values)
    assert message in str(caught.value)
    assert TrainerConfig.from_config({"clip_grad_norm": None, "max_steps": None, "clip_grad_norm": 2}).clip_grad_norm == 2.0


def test_trainer_batch_size_from_the_command_line_fails_in_one_line_before_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    train_module = load_script("train.py")
    monkeypatch.setattr(train_module, "build_training_model", lambda *a, **k: pytest.fail("the model was built"))
    cfg = compose_config("train", "model=tiny", "data=csv", "trainer.batch_size=abc", f"paths.output_root={tmp_path}",
                         "run_name=typed", "device=cpu")  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(train_module.train)(cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: trainer.batch_size must be an int, got 'abc' (str)\n"


def test_hydra_composition_errors_read_as_one_line():
    from hydra.errors import ConfigCompositionException, MissingConfigException

    missing = MissingConfigException("In 'train': Could not find 'data/nonexistent'\n\nAvailable options in 'data':\n"
                                     "\tbaid\n\tcsv\n\ttoy\nConfig search path:\n\tprovider=hydra, path=pkg://hydra.conf")  # fmt: skip
    assert hydra_one_line(missing) == ("In 'train': Could not find 'data/nonexistent'; "
                                       "Available options in 'data': baid, csv, toy")  # fmt: skip
    try:
        raise ConfigCompositionException("Could not override 'foo'.\nTo append to your config use +foo=1") from KeyError("x")
    except ConfigCompositionException as error:
        assert hydra_one_line(error) == "Could not override 'foo'. To append to your config use +foo=1 ('x')"


@pytest.mark.parametrize("failure", ["oserror", "torch zip writer"])
def test_a_full_disk_while_writing_a_checkpoint_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, capsys, failure):
    from types import SimpleNamespace

    from mtpg_aiaa.engine.trainer import Trainer

    state = {"model": {}, "optimizer": {}, "scheduler": {}, "step": 1, "epoch": 0, "batch_in_epoch": 0, "config": {}}
    trainer = SimpleNamespace(rank=0, run_dir=tmp_path, state_dict=lambda: state)
    Trainer.save(trainer, "last.pt")
    before = (tmp_path / "last.pt").read_bytes()

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(lambda cfg: Trainer.save(trainer, "last.pt"))({})
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'last.pt'}: ") and err.count("\n") == 1
    assert ("no space left on the device" if failure == "oserror" else "a full disk?") in err and "MiB free" in err
    assert (tmp_path / "last.pt").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# -- the contract end to end: a few real processes ---------------------------------------------
def run_command(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two python processes (~15 s each here)
def test_train_py_hydra_errors_and_input_errors_are_one_line_exit_2_and_leave_no_run_folder(tmp_path):
    result = run_command(str(ROOT / "train.py"), "task=nope/x", f"paths.output_root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: In 'train': Could not find 'task/nope/x'")
    result = run_command(str(ROOT / "train.py"), "model=tiny", "data=csv", "trainer.batch_size=0", "run_name=bad",
                         f"paths.output_root={tmp_path}", "device=cpu", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: trainer.batch_size must be at least 1, got 0"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "train" / "bad").exists()  # Hydra's .hydra/ and the log went with it


# -- scripts/describe.py ------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["table=test_csv"], "error: table must be one of ('csv', 'train_csv', 'val_csv'), got 'test_csv'\n"),
    (["+describer.temprature=0.5"], "error: unknown describer setting(s) describer.temprature; known: "),
    (["describer.max_new_tokens=0"], "error: max_new_tokens must be positive, got 0\n"),
    (["images=/nonexistent/folder"], "error: "),
])
def test_describe_errors_are_one_line_exit_2(overrides, message, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    describe = load_script("scripts/describe.py").describe
    cfg = compose_config("describe", "describer.model_path=m", "data.csv=x.csv", "data.image_root=.", *overrides)
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(describe)(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.slow  # one python process (~15 s here)
def test_test_py_missing_image_in_a_worker_is_one_line_exit_2_and_leaves_no_run_folder(make_smoke, tmp_path):
    smoke = make_smoke(3, 0)
    csv = scores_csv(tmp_path / "labels.csv", [("gone.jpg", 5.0), *[(p.name, 6.0) for p in Path(smoke["image_root"]).iterdir()]])
    result = run_command(str(ROOT / "test.py"), f"ckpt={smoke['ckpt']}", f"data.csv={csv}",
                         f"data.image_root={smoke['image_root']}", "eval.num_workers=1", "eval.progress=false",
                         "device=cpu", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"error: Image file {Path(smoke['image_root']) / 'gone.jpg'} does not exist "
                    f"(table row 0, 0-based, read from {csv})")  # fmt: skip
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs" / "test").iterdir())  # the run's folder went with the failure


def test_bare_train_py_says_which_value_is_missing_in_one_line(tmp_path, monkeypatch, capsys):
    """``python train.py`` with no data: MTPG's data.csv interpolates the unset data.root."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    train_module = load_script("train.py")
    monkeypatch.setattr(train_module, "build_training_model", lambda *a, **k: pytest.fail("the model was built"))
    cfg = compose_config("train", f"paths.output_root={tmp_path}", "run_name=bare", "device=cpu")
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(train_module.train)(cfg)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: missing mandatory value data.root (needed by data.") and "experiment=quickstart" in err
