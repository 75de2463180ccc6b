"""The architecture's claim, checked: a fourth system, written outside the package and found
the way a user's installed package is (an entry point in ``*.dist-info/entry_points.txt``
on the path), is trained by ``train.py``, scored by ``test.py`` and by the score CLI, each
in a fresh process, with no edit to ``mtpg_aiaa`` or ``configs/``.

The system (``tiny4``) is a linear head on an 8x8 thumbnail: its own ``Scorer``, its own
``system.json``, its own task module and its own Hydra configs (``model/tiny4/``,
``task/tiny4/``) in its own folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import ROOT
from mtpg_aiaa.models import registry

SYSTEM_JSON = {
    "name": "tiny4",
    "description": "tiny4: a linear head on an 8x8 thumbnail (a test's outside system)",
    "build": "tiny4_system.model:build_tiny4",
    "load": "tiny4_system.model:load_tiny4",
    "recognizes": "tiny4_system.model:recognizes",
    "score_range": {"low": 0.0, "high": 1.0, "higher_is_better": True},
    "text_names": [],
    "configs": "configs",
}

MODEL_PY = '''
"""tiny4's scorer: sigmoid(linear(8x8 RGB thumbnail)), scores on 0-1."""
import numpy as np
import torch
from torch import nn

from mtpg_aiaa.models.base import Scorer, ScoreRange
from mtpg_aiaa.models.checkpoints import load_model_file


class Thumbnail:
    def __init__(self, size):
        self.size = size

    def __call__(self, image):
        pixels = np.asarray(image.convert("RGB").resize((self.size, self.size)), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class Tiny4Scorer(Scorer):
    system = "tiny4"
    score_range = ScoreRange(0.0, 1.0)

    def __init__(self, size=8):
        super().__init__()
        self.size = size
        self.head = nn.Linear(3 * size * size, 1)

    def build_transform(self, train=False):
        return Thumbnail(self.size)

    def forward(self, batch):
        return {"score": torch.sigmoid(self.head(batch["image"].flatten(1))).squeeze(1)}

    def config_dict(self):
        return {"size": self.size}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_tiny4(size=8):
    return Tiny4Scorer(size)


def load_tiny4(path, metadata, device="cpu"):
    return load_model_file(path, metadata).to(device)  # the project's own format, read once for every system


def recognizes(keys, metadata):
    return metadata.get("system") == "tiny4"
'''

TASKS_PY = '''
"""tiny4's one training task, ``tiny4/fit``: MSE to the 0-1 score of a CSV (image, score)."""
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from scipy.stats import spearmanr

class FitTask:
    def __init__(self, model, table, image_root, score_scale):
        rows = pd.read_csv(table)
        transform = model.build_transform()
        self.train_dataset = [(transform(Image.open(Path(image_root) / name)), float(score) / score_scale)
                              for name, score in zip(rows["image"], rows["score"])]

    def collate(self, samples):
        return {"image": torch.stack([s[0] for s in samples]), "score": torch.tensor([s[1] for s in samples])}

    def training_step(self, model, batch, device):
        out = model({"image": batch["image"].to(device)})
        return {"loss": torch.nn.functional.mse_loss(out["score"], batch["score"].to(device))}

    @torch.no_grad()
    def validate(self, model, device):
        model.eval()
        batch = self.collate(self.train_dataset)
        scores = model({"image": batch["image"].to(device)})["score"].cpu()
        return {"val/srcc": float(spearmanr(scores, batch["score"]).statistic)}


def build_fit_task(model, table, image_root, score_scale=10.0):
    return FitTask(model, table, image_root, score_scale)
'''

MODEL_YAML = """\
_target_: tiny4_system.model.build_tiny4
size: 8
"""

TASK_YAML = """\
# @package _global_
defaults:
  - override /model: tiny4/small
  - override /data: null
task:
  _target_: tiny4_system.tasks.build_fit_task
  table: ???
  image_root: ???
  score_scale: 10.0
run_name: tiny4-fit
"""


def write_outside_system(site: Path) -> None:
    """``tiny4_system`` and its ``*.dist-info`` (the entry point) in ``site``, as pip would leave them."""
    package = site / "tiny4_system"
    (package / "configs" / "model" / "tiny4").mkdir(parents=True)
    (package / "configs" / "task" / "tiny4").mkdir(parents=True)
    (package / "__init__.py").write_text('"""tiny4: an aesthetics system from outside mtpg_aiaa."""\n')
    (package / "model.py").write_text(textwrap.dedent(MODEL_PY))
    (package / "tasks.py").write_text(textwrap.dedent(TASKS_PY))
    (package / "system.json").write_text(json.dumps(SYSTEM_JSON, indent=2))
    (package / "configs" / "model" / "tiny4" / "small.yaml").write_text(MODEL_YAML)
    (package / "configs" / "task" / "tiny4" / "fit.yaml").write_text(TASK_YAML)
    dist = site / "tiny4_system-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny4-system\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mtpg_aiaa.systems]\ntiny4 = tiny4_system\n")


def write_images(root: Path, count: int = 8) -> Path:
    """``count`` flat-colour images whose 0-10 score is their brightness, and ``labels.csv``."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(count):
        level = int(255 * i / (count - 1))
        Image.fromarray(np.full((16, 16, 3), level, dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"image": f"{i}.png", "score": round(10 * i / (count - 1), 3)})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def package_snapshot() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the package and of configs/ (bytecode aside)."""
    files = [*(ROOT / "mtpg_aiaa").rglob("*"), *(ROOT / "configs").rglob("*")]
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in files if path.is_file() and "__pycache__" not in path.parts}  # fmt: skip


def run(env: dict, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow  # three interpreter start-ups, ~60 s on the shared 2-core machine
def test_an_outside_system_trains_tests_and_scores_without_editing_the_package(tmp_path, monkeypatch):
    before = package_snapshot()
    site = tmp_path / "site"
    write_outside_system(site)
    labels = write_images(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("MTPG_AIAA_SYSTEMS", None)  # found by its entry point, not by the explicit setting
    with monkeypatch.context() as patch:  # what `python -m mtpg_aiaa list` shows, read in this process
        patch.syspath_prepend(str(site))
        patch.delenv("MTPG_AIAA_SYSTEMS", raising=False)
        registry._reset_for_tests()
        listed = {row["name"]: row for row in registry.describe_systems()}
        assert listed["tiny4"]["tasks"] == ["tiny4/fit"] and listed["tiny4"]["model_configs"] == ["tiny4/small"]
        assert listed["tiny4"]["origin"].startswith("entry point 'tiny4'") and "tiny4_system" not in sys.modules
    registry._reset_for_tests()

    run(env, "train.py", "task=tiny4/fit", f"task.table={labels}",
        f"task.image_root={labels.parent / 'images'}", "debug=fast", "trainer.batch_size=4", "device=cpu",
        f"paths.output_root={tmp_path / 'out'}", "run_name=tiny4")  # fmt: skip
    weights = tmp_path / "out" / "train" / "tiny4" / "best.safetensors"
    assert weights.is_file()

    run(env, "test.py", f"ckpt={weights}", f"data.csv={labels}", f"data.image_root={labels.parent / 'images'}",
        "eval.num_workers=0", "eval.n_bootstrap=0", "eval.progress=false", "device=cpu",
        f"hydra.run.dir={tmp_path / 'test'}")  # fmt: skip
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["system"] == "tiny4" and metrics["n"] == 8 and metrics["score_range"] == [0.0, 1.0]

    out = tmp_path / "scores.csv"
    run(env, "-m", "mtpg_aiaa", "score", "--model", "tiny4", "--weights", str(weights), str(labels.parent / "images"),
        "--out", str(out), "--device", "cpu", "--no-progress")  # fmt: skip
    scores = pd.read_csv(out)
    assert len(scores) == 8 and scores["pred"].between(0, 1).all()
    # test.py and the CLI score the same file through the same interface: the same numbers
    # (test.py's pred_0_10 is on the table's scale, data.score_scale=10)
    predictions = pd.read_csv(tmp_path / "test" / "predictions.csv")
    by_name = dict(zip(scores["image"].map(lambda p: Path(p).name), scores["pred"]))
    expected = (predictions["pred_0_10"] / 10).tolist()
    assert [by_name[name] for name in predictions["image"]] == pytest.approx(expected, abs=1e-5)

    assert package_snapshot() == before, "running an outside system changed the package or its configs"
