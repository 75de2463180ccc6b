"""The CG-IAA toy quickstart's own parts: the per-attribute VLAP loss (the ``cgiaa/vlap`` task's
option), the VLAP text knob through the Trainer, and a tiny end-to-end run (every model trained
through the Trainer) that reads the split it is told to (``--split-seed``, ``--eval-split``), trains MAP on the
number of scored pictures it is told to (``--map-pictures``) and writes its tables."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from PIL import Image

from mtpg_aiaa.backbone.longclip import LongCLIP
from mtpg_aiaa.backbone.tokenizer import get_tokenizer
from mtpg_aiaa.data import load_rgb_image
from mtpg_aiaa.data.toy import split_indices
from mtpg_aiaa.engine.tasks.cgiaa.vlap import VLAPTask
from mtpg_aiaa.experiments.cgiaa import toy_quickstart as quickstart
from mtpg_aiaa.models.cgiaa import ATTRIBUTES
from mtpg_aiaa.models.cgiaa.losses import class_infonce, symmetric_infonce
from mtpg_aiaa.models.cgiaa.prefix import build_release_transform


pytestmark = pytest.mark.usefixtures("one_thread")


def test_class_infonce_is_infonce_when_every_text_is_distinct():
    torch.manual_seed(0)
    image, text = torch.randn(5, 8), torch.randn(5, 8)
    assert float(class_infonce(image, text, torch.arange(5))) == pytest.approx(float(symmetric_infonce(image, text)), rel=1e-6)


def test_class_infonce_by_hand_with_shared_texts():
    torch.manual_seed(1)
    image, classes = torch.randn(4, 6), torch.randn(3, 6)
    labels = torch.tensor([0, 2, 0, 2])  # class 1 is absent from the batch: no text -> image term
    logits = F.normalize(image, dim=-1) @ F.normalize(classes, dim=-1).T / 0.07
    image_to_text = np.mean([-float(logits[i].log_softmax(0)[labels[i]]) for i in range(4)])
    over_images = logits.T.log_softmax(1)
    text_to_image = np.mean([-float(over_images[0, [0, 2]].mean()), -float(over_images[2, [1, 3]].mean())])
    expected = (image_to_text + text_to_image) / 2
    assert float(class_infonce(image, classes, labels)) == pytest.approx(expected, rel=1e-5)


def critique_rows(n: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    levels = {a: [f"{a} level {k}." for k in range(3)] for a in ATTRIBUTES}
    return [{a: levels[a][rng.integers(3)] for a in ATTRIBUTES} for _ in range(n)]


def pair_tables(tmp_path, n: int = 6) -> tuple[pd.DataFrame, torch.Tensor]:
    """``n`` random 32-px pictures on disk with toy-like critiques, and their evaluation views."""
    rng = np.random.default_rng(1)
    names = [f"{i}.png" for i in range(n)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name)
    table = pd.DataFrame(critique_rows(n)).assign(image=names)
    transform = build_release_transform(32)
    return table, torch.stack([transform(load_rgb_image(tmp_path / name)) for name in names])


def test_vlap_task_per_attribute_option_is_the_class_infonce_of_each_attribute(tmp_path):
    """``cgiaa/vlap`` with ``attributes``: the mean over attributes of ``class_infonce`` against
    that attribute's distinct train critiques, recomputed here by hand on the same batch."""
    table, pixels = pair_tables(tmp_path)
    torch.manual_seed(0)
    clip = LongCLIP(quickstart.tiny_clip_arch(32, patch_size=16))
    task = VLAPTask(clip, table, table, tmp_path, attributes=ATTRIBUTES)
    batch = task.collate([task.train_dataset[i] for i in (4, 0, 3, 1)])
    with torch.no_grad():
        got = task.training_step(clip, batch, torch.device("cpu"))["loss"]
        image = clip.encode_image(pixels[[4, 0, 3, 1]])
        terms = []
        for a in ATTRIBUTES:
            classes = sorted(set(table[a]))
            labels = torch.tensor([classes.index(table[a][i]) for i in (4, 0, 3, 1)])
            terms.append(class_infonce(image, clip.encode_text(get_tokenizer(77)(classes)), labels))
    assert float(got) == pytest.approx(float(torch.stack(terms).mean()), rel=1e-5)
    plain = VLAPTask(clip, table.assign(critique=table["color"]), table.assign(critique=table["color"]), tmp_path)
    with torch.no_grad():  # without the option: symmetric InfoNCE of each picture with its own critique
        expected = symmetric_infonce(image, clip.encode_text(get_tokenizer(77)([table["color"][i] for i in (4, 0, 3, 1)])))
        assert float(plain.training_step(clip, plain.collate([plain.train_dataset[i] for i in (4, 0, 3, 1)]),
                                         torch.device("cpu"))["loss"]) == pytest.approx(float(expected), rel=1e-5)
    metrics = task.validate(clip, torch.device("cpu"))
    assert set(metrics) == {"val/loss", "val/neg_loss", *(f"val/top1/{a}" for a in ATTRIBUTES)}
    with pytest.raises(ValueError, match="per-attribute"):
        quickstart.train_vlap(clip, {"train": table, "val": table}, tmp_path, steps=1, seed=0, run_dir=tmp_path / "r",
                              text="one")  # fmt: skip


@pytest.mark.parametrize("text", ["per-attribute", "joined"])
def test_train_vlap_runs_the_registered_task_through_the_trainer(tmp_path, text):
    """Two steps through the Trainer: its metrics file holds the steps' losses, the validation
    is the task's, and the weights moved except the frozen token table."""
    table, _ = pair_tables(tmp_path)
    torch.manual_seed(0)
    clip = LongCLIP(quickstart.tiny_clip_arch(32, patch_size=16))
    start = {k: v.clone() for k, v in clip.state_dict().items()}
    metrics = quickstart.train_vlap(clip, {"train": table, "val": table}, tmp_path, steps=2, seed=0,
                                    run_dir=tmp_path / "run", text=text)  # fmt: skip
    assert metrics["step"] == 2 and ("val/top1/color" in metrics) == (text == "per-attribute")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert rows["train/loss"].notna().sum() >= 1 and (tmp_path / "run" / "last.pt").is_file()
    assert torch.equal(clip.token_embedding.weight, start["token_embedding.weight"])
    assert not torch.equal(clip.visual.conv1.weight, start["visual.conv1.weight"])


@pytest.mark.parametrize(("split", "split_seed"), [("val", 0), ("test", 101)])
def test_tiny_quickstart_reads_the_split_it_is_told(tmp_path, monkeypatch, split, split_seed):
    runs = []
    real_fit = quickstart.fit

    def recording_fit(model, task, optimizer, config, run_dir, **kwargs):
        names = getattr(model, "text_names", None)
        runs.append((type(task).__name__, len(task.train_dataset), config.batch_size, names))
        return real_fit(model, task, optimizer, config, run_dir, **kwargs)

    monkeypatch.setattr(quickstart, "fit", recording_fit)  # every model trains through the Trainer
    args = quickstart.parse_args(["--out", str(tmp_path), "--num-images", "40", "--image-size", "32", "--patch-size", "16",
                                  "--vlap-steps", "1", "--expert-steps", "1", "--map-epochs", "1", "--seeds", "2",
                                  "--bootstrap", "5", "--map-pictures", "10", "--eval-split", split,
                                  "--split-seed", str(split_seed)])  # fmt: skip
    results = quickstart.run(args)
    assert results["pictures"] == {"train": 32, "map_scored": 10, split: 4}
    # VLAP on the 32 train pictures, one expert per attribute on their 32 critiques, then three
    # MAP arms x two head seeds on the 10 scored pictures: image + 4 critiques, image, image + 3
    without_general = tuple(a for a in ATTRIBUTES if a != "general")
    assert runs == ([("VLAPTask", 32, 32, None)] + [("ExpertTask", 32, 32, None)] * 4
                    + [("ScoreTask", 10, 10, ATTRIBUTES)] * 2 + [("ScoreTask", 10, 10, ())] * 2
                    + [("ScoreTask", 10, 10, without_general)] * 2)  # fmt: skip
    assert set(results["srcc"]) == {"map", "image_only", "map_without_general"}
    assert all(len(values) == 2 for values in results["srcc"].values())
    assert len(results["paired_bootstrap_map_minus_image_only"]["per_seed"]) == 2
    assert "MAP without the general critique - image-only" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["eval_split"] == split
    assert f"4 {split} pictures" in (tmp_path / "results.md").read_text()
    parts = split_indices(40, split_seed)
    expected = sorted(f"{i:05d}.jpg" for i in {*parts["train"], *parts["val"], *parts[split]})
    # only these need critiques: train (experts, MAP), val (MAP's validation) and the held-out split
    assert list(pd.read_csv(tmp_path / "critiques.csv", dtype=str)["image"]) == expected


def test_match_gain_interval_brackets_the_difference_and_is_zero_for_equal_answers():
    rng = np.random.default_rng(0)
    hits, constant = (rng.uniform(size=400) < 0.7).astype(float), (rng.uniform(size=400) < 0.35).astype(float)
    low, high = quickstart.match_gain_interval(hits, constant, n=300)
    assert low < hits.mean() - constant.mean() < high and low > 0
    assert quickstart.match_gain_interval(hits, hits, n=50) == [0.0, 0.0]
    low, high = quickstart.match_gain_interval(constant, hits, n=300)
    assert high < 0
