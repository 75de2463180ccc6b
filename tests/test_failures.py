"""Failure behaviour: skipped batches, interruptions, one-line errors, leftovers, edge cases."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from mtpg_aiaa.backbone.convert import CheckpointError, read_state_dict
from mtpg_aiaa.engine.cli_errors import one_line_errors
from mtpg_aiaa.data import DEFAULT_MAX_PIXELS, BadInputError, collate_samples, load_rgb_image, read_score_table
from mtpg_aiaa.engine.checkpointing import load_training_state, save_training_state
from mtpg_aiaa.engine.loggers import MetricsLogger
from mtpg_aiaa.engine.trainer import Trainer, TrainerConfig, TrainingInterrupted, UnknownSettingError
from mtpg_aiaa.eval.predict import Predictions, write_predictions
from mtpg_aiaa.fileio import atomic_write
from mtpg_aiaa.models.mtpg.checkpoint import load_model, load_official_checkpoint, ours_to_official
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path):
    """A top-level script as a module, by path (``test.py`` would shadow Python's ``test``)."""
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    make_smoke_data = load_script(ROOT / "scripts" / "make_smoke_data.py")
    return make_smoke_data.write_smoke_data(tmp_path_factory.mktemp("smoke"), num_images=3, seed=5)


# -- the trainer on a one-layer task: fast, and every batch under the test's control -------------
class LineData(torch.utils.data.Dataset):
    """``y = 2x``; the first ``bad_calls`` reads are unreadable images (reads are in order:
    no workers), so the first micro-batch has no readable sample at all."""

    def __init__(self, n: int = 8, bad_calls: int = 0):
        self.x = torch.linspace(-1, 1, n).unsqueeze(1)
        self.bad_calls, self.calls = bad_calls, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        self.calls += 1
        if self.calls <= self.bad_calls:
            return {"skipped": True, "index": index, "image_name": f"{index}.jpg", "reason": "unreadable"}
        return {"x": self.x[index], "target": 2 * self.x[index, 0], "index": index}


class LineTask:
    def __init__(self, data: LineData, on_step=None):
        self.train_dataset, self.on_step, self.steps = data, on_step, 0

    def collate(self, samples: list) -> dict:
        return collate_samples(samples)

    def training_step(self, model, batch, device):
        self.steps += 1
        if self.on_step:
            self.on_step(self.steps)
        loss = ((model(batch["x"]).squeeze(1) - batch["target"]) ** 2).mean()
        return {"loss": loss}

    def validate(self, model, device):
        x = self.train_dataset.x
        with torch.no_grad():
            return {"val/srcc": float(-((model(x).squeeze(1) - 2 * x[:, 0]) ** 2).mean())}


def line_trainer(run_dir: Path, task: LineTask, **settings) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainerConfig(**{"epochs": 1, "batch_size": 2, "num_workers": 0, "progress": False, "log_every": 1,
                              "clip_grad_norm": None, **settings})  # fmt: skip
    trainer = Trainer(model, task, optimizer, None, config, run_dir, MetricsLogger(run_dir), {}, torch.device("cpu"))
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return trainer


def test_a_micro_batch_with_no_readable_image_is_skipped_counted_and_training_goes_on(tmp_path):
    trainer = line_trainer(tmp_path, LineTask(LineData(n=8, bad_calls=2)))
    trainer.fit()
    assert trainer.step == 4  # 4 micro-batches, the first empty: the schedule still advances
    assert (trainer.skipped_micro_batches, trainer.skipped_images) == (1, 2)
    assert trainer.task.steps == 3  # the empty one never reached the loss
    assert load_training_state(tmp_path / "last.pt")["skipped"] == {"micro_batches": 1, "images": 2}
    logged = [row for row in trainer.logger.history if "train/skipped_micro_batches" in row]
    assert logged and logged[-1]["train/skipped_micro_batches"] == 1 and logged[-1]["train/skipped_images"] == 2


def test_sigterm_saves_last_pt_and_exits_143_with_the_resume_command(tmp_path, monkeypatch, capsys):
    def terminate(step: int) -> None:
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal, caught by the trainer's handler

    trainer = line_trainer(tmp_path, LineTask(LineData(n=8), on_step=terminate))
    with pytest.raises(TrainingInterrupted) as stop:
        trainer.fit()
    assert stop.value.exit_code == 128 + signal.SIGTERM == 143
    assert load_training_state(tmp_path / "last.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers restored

    monkeypatch.setattr("sys.argv", ["train.py", "stage=finetune", "run_name=old", "resume=never"])
    main = one_line_errors(lambda cfg: (_ for _ in ()).throw(stop.value))
    with pytest.raises(SystemExit) as exit_info:
        main(OmegaConf.create({"run_name": "finetune-1"}))
    assert exit_info.value.code == 143
    message = capsys.readouterr().err.strip()
    assert message.startswith("interrupted at step 2 (SIGTERM)") and "\n" not in message
    assert message.endswith("resume with: python train.py stage=finetune run_name=finetune-1 resume=auto")


def test_resume_after_a_crash_leaves_no_duplicate_steps_and_no_stale_temporaries(tmp_path):
    def crash(step: int) -> None:
        if step == 4:
            raise RuntimeError("killed")

    first = line_trainer(tmp_path, LineTask(LineData(n=8), on_step=crash), save_every=2, val_every=100)
    with pytest.raises(RuntimeError, match="killed"):
        first.fit()  # last.pt holds step 2; the history already has step 3
    assert max(row["step"] for row in MetricsLogger(tmp_path).history) == 3
    leftover = tmp_path / ".last.pt.deadbeef.tmp"
    leftover.write_bytes(b"half a checkpoint")  # what a kill during torch.save leaves

    second = line_trainer(tmp_path, LineTask(LineData(n=8)), save_every=2, val_every=100)
    second.load_state_dict(load_training_state(tmp_path / "last.pt"))
    second.logger.rewind(second.step)  # as train.py does on resume
    second.fit()
    assert not leftover.exists()
    for steps in ([json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()],
                  pd.read_csv(tmp_path / "metrics.csv")["step"].tolist()):  # fmt: skip
        assert steps == sorted(set(steps)) and steps[-1] == 4


def test_checkpoints_get_the_permissions_of_other_outputs(tmp_path):
    previous = os.umask(0o022)
    try:
        written = atomic_write(tmp_path / "last.pt", lambda tmp: torch.save({"w": torch.ones(1)}, tmp))
        plain = tmp_path / "metrics.json"
        plain.write_text("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_unknown_trainer_keys_are_refused_before_anything_is_built(tmp_path, monkeypatch):
    with pytest.raises(UnknownSettingError, match=r"trainer\.batchsize \(did you mean trainer\.batch_size\?\)"):
        TrainerConfig.from_config({"batchsize": 4, "epochs": 1})
    assert TrainerConfig.from_config({"eval_batch_size": 8}, ignored=("eval_batch_size",), seed=3).seed == 3

    train_module = load_script(ROOT / "train.py")
    monkeypatch.setattr(train_module, "build_training_model", lambda *a, **k: pytest.fail("the model was built"))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny", "data=csv", "+trainer.batchsize=4",
                                          f"paths.output_root={tmp_path}", "run_name=typo"])  # fmt: skip
    with pytest.raises(UnknownSettingError, match="batchsize"):
        train_module.train(cfg)


# -- one-line errors -------------------------------------------------------------------------
def test_known_errors_print_one_line_and_exit_2_unknown_ones_keep_the_traceback(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def broken(cfg):
        raise CheckpointError("x.pt does not match the model:\n  missing: a\n  wrong shape: b")

    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(broken)(OmegaConf.create({}))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: x.pt does not match the model: missing: a; wrong shape: b\n"

    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(lambda cfg: cfg.ckpt)(OmegaConf.create({"ckpt": "???"}))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: missing mandatory value ckpt: set it on the command line (ckpt=...)\n"

    def bug(cfg):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        one_line_errors(bug)(OmegaConf.create({}))


def tiny_model() -> nn.Module:
    torch.manual_seed(1)
    return build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"))


def test_a_training_checkpoint_given_as_a_model_says_what_to_pass(tmp_path):
    (tmp_path / "best.safetensors").write_bytes(b"placeholder")
    state = {"model": {"w": torch.ones(1)}, "optimizer": {}, "scheduler": {}, "step": 3, "epoch": 0,
             "batch_in_epoch": 0, "config": {}}  # fmt: skip
    last = save_training_state(tmp_path / "last.pt", state)
    with pytest.raises(CheckpointError, match=rf"last\.pt is a training checkpoint.*pass {tmp_path}/best\.safetensors"):
        load_model(last)


def test_a_missing_backbone_key_is_reported_missing_not_every_later_key_unexpected(tmp_path):
    state = ours_to_official(tiny_model())
    del state["model.visual.transformer.resblocks.0.attn.in_proj_weight"]
    torch.save(state, tmp_path / "model_save.pt")
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(tmp_path / "model_save.pt")
    assert "missing: model.visual.transformer.resblocks.0.attn.in_proj_weight" in str(info.value)
    assert "unexpected" not in str(info.value)


def test_load_errors_have_causes_and_never_advise_unpickling(tmp_path, smoke):
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Payload()}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match=r"pickled\.pt.*(posix|nt)\.system") as info:
        read_state_dict(tmp_path / "pickled.pt")
    assert "weights_only" not in str(info.value) and "will likely succeed" not in str(info.value)
    assert not marker.exists()

    for name in ("empty.pt", "empty.safetensors"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(CheckpointError, match=rf"{name} is empty \(0 bytes\)"):
            load_model(tmp_path / name)
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty"):
        load_training_state(tmp_path / "empty.pt")

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(smoke["ckpt"]), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(smoke["ckpt"]))
    poisoned = next(key for key, value in sorted(tensors.items()) if key.startswith("fusion.") and value.dim() == 2)
    tensors[poisoned][0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "diverged.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=rf"diverged\.safetensors: tensor '{poisoned}' has 1 NaN value"):
        load_model(tmp_path / "diverged.safetensors")


# -- user text files -------------------------------------------------------------------------
def test_non_utf8_csv_and_sidecar_name_the_file_and_line(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes("image,score,comment\na.jpg,5,fine\n".encode() + b"b.jpg,6,caf\xe9 latin-1\n" + b"c.jpg,7,x\n" * 3000)
    with pytest.raises(BadInputError, match=r"labels\.csv, line 3, column 12: byte 0xe9 is not valid UTF-8"):
        read_score_table(csv)

    demo = load_script(ROOT / "demo.py")
    image = tmp_path / "painting.jpg"
    (tmp_path / "painting.txt").write_bytes(b"first line\nsecond \xff line\n")
    with pytest.raises(BadInputError, match=r"painting\.txt, line 2"):
        demo.known_description(image, None)


def test_a_huge_description_hits_max_description_chars(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(f'image,score,comment\na.jpg,5,"{"word " * 200_000}"\n', encoding="utf-8")  # 1 MB
    expected = r"line 2: description of image 'a.jpg' has 1,000,000 characters, more than max_description_chars=20,000"
    with pytest.raises(BadInputError, match=expected):
        read_score_table(csv)
    assert len(read_score_table(csv, max_description_chars=2_000_000)["description"][0]) == 1_000_000


# -- images ----------------------------------------------------------------------------------
def test_the_default_pixel_limit_refuses_a_bomb_that_pil_would_decode(tmp_path):
    assert DEFAULT_MAX_PIXELS < 2 * Image.MAX_IMAGE_PIXELS  # PIL's hard limit
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        assert compose("test", overrides=["ckpt=x", "data.csv=x", "data.image_root=x"]).data.max_pixels == DEFAULT_MAX_PIXELS
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 MP in a few KB: under PIL's limit, 300 MB as RGB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(BadInputError, match=r"bomb\.png is 10000x10000 = 100,000,000 pixels, above the limit"):
        load_rgb_image(bomb)


# -- test.py with on_bad_image=skip at the edges -------------------------------------------------
def evaluate_images(smoke: dict, images: Path, out: Path) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("test", overrides=[
            f"ckpt={smoke['ckpt']}", f"data.csv={smoke['csv']}", f"data.image_root={images}",
            "data.on_bad_image=skip", "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=10",
        ])  # fmt: skip
    return load_script(ROOT / "test.py").evaluate(cfg, out)


@pytest.mark.slow  # three evaluations of the tiny model (~5 s)
def test_skip_edges_write_predictions_and_skipped_lists(smoke, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    shutil.copytree(smoke["image_root"], images)
    names = sorted(p.name for p in images.iterdir())
    for name in names:
        (images / name).write_bytes(b"broken")
    with pytest.raises(BadInputError, match=r"no image of .*labels\.csv could be scored \(3 skipped\)"):
        evaluate_images(smoke, images, out)
    assert len(pd.read_csv(out / "skipped.csv")) == 3 and len(pd.read_csv(out / "predictions.csv")) == 0

    shutil.copy(Path(smoke["image_root"]) / names[0], images / names[0])  # one image left
    metrics = evaluate_images(smoke, images, out)
    assert metrics["n"] == 1 and metrics["srcc"] is None and "at least 2" in metrics["note"]
    assert json.loads((out / "metrics.json").read_text())["srcc"] is None
    assert pd.read_csv(out / "predictions.csv")["image"].tolist() == [names[0]]
    assert sorted(pd.read_csv(out / "skipped.csv")["image_name"]) == names[1:]

    for name in names[1:]:
        shutil.copy(Path(smoke["image_root"]) / name, images / name)
    assert evaluate_images(smoke, images, out)["n"] == 3
    assert not (out / "skipped.csv").exists()  # the earlier run's list does not linger


def test_write_predictions_removes_a_stale_skipped_list(tmp_path):
    (tmp_path / "skipped.csv").write_text("index,image_name,reason\n0,a.jpg,old\n")
    table = pd.DataFrame({"index": [0], "image": ["a.jpg"], "score": [5.0], "target": [0.5], "pred": [0.4], "pred_0_1": [0.4],
                          **{f"prob_{level}": [0.2] for level in ("bad", "poor", "fair", "good", "perfect")}})  # fmt: skip
    write_predictions(Predictions(table), tmp_path, 10.0)
    assert not (tmp_path / "skipped.csv").exists()
