"""The CG-IAA toy quickstart's own parts: the per-attribute VLAP loss, the VLAP text knob, and a
tiny end-to-end run that reads the split it is told to (``--split-seed``, ``--eval-split``), trains MAP on the
number of scored pictures it is told to (``--map-pictures``) and writes its tables."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtpg_aiaa.backbone.longclip import LongCLIP
from mtpg_aiaa.data.toy import split_indices
from mtpg_aiaa.experiments.cgiaa import toy_quickstart as quickstart
from mtpg_aiaa.models.cgiaa import ATTRIBUTES
from mtpg_aiaa.models.cgiaa.losses import class_infonce, symmetric_infonce


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


@pytest.mark.parametrize("text", ["per-attribute", "joined"])
def test_train_vlap_text_knob_computes_the_named_loss(text):
    """One step returns the loss before the update: recompute it from the same start."""
    rows, pixels = critique_rows(6), torch.randn(6, 3, 32, 32)
    torch.manual_seed(0)
    clip = LongCLIP(quickstart.tiny_clip_arch(32, patch_size=16))
    start = {k: v.clone() for k, v in clip.state_dict().items()}
    got = quickstart.train_vlap(clip, pixels, rows, steps=1, batch_size=4, seed=3, text=text)
    clip.load_state_dict(start)
    clip.train()
    index = torch.randperm(6, generator=torch.Generator().manual_seed(3))[:4]
    with torch.no_grad():
        image = clip.encode_image(pixels[index])
        if text == "joined":
            joined = [" ".join(rows[i][a] for a in ATTRIBUTES) for i in index.tolist()]
            expected = symmetric_infonce(image, clip.encode_text(quickstart.clip_tokens(joined)))
        else:
            terms = []
            for a in ATTRIBUTES:
                classes = sorted({r[a] for r in rows})
                labels = torch.tensor([classes.index(rows[i][a]) for i in index.tolist()])
                terms.append(class_infonce(image, clip.encode_text(quickstart.clip_tokens(classes)), labels))
            expected = torch.stack(terms).mean()
    assert got == pytest.approx(float(expected), rel=1e-4)
    with pytest.raises(ValueError, match="per-attribute"):
        quickstart.train_vlap(clip, pixels, rows, steps=1, batch_size=4, seed=3, text="one")


@pytest.mark.parametrize(("split", "split_seed"), [("val", 0), ("test", 101)])
def test_tiny_quickstart_reads_the_split_it_is_told(tmp_path, monkeypatch, split, split_seed):
    head_rows = []
    train_head = quickstart.train_head
    monkeypatch.setattr(quickstart, "train_head", lambda scorer, features, scores, *rest: (
        head_rows.append((len(features), len(scores), features.shape[1])), train_head(scorer, features, scores, *rest)))
    args = quickstart.parse_args(["--out", str(tmp_path), "--num-images", "40", "--image-size", "32", "--patch-size", "16",
                                  "--vlap-steps", "1", "--expert-steps", "1", "--map-epochs", "1", "--seeds", "2",
                                  "--bootstrap", "5", "--map-pictures", "10", "--eval-split", split,
                                  "--split-seed", str(split_seed)])  # fmt: skip
    results = quickstart.run(args)
    assert results["pictures"] == {"train": 32, "map_scored": 10, split: 4}
    width = quickstart.tiny_clip_arch(32, 16).embed_dim
    # three arms x two seeds, each on the 10 scored pictures: image + 4 critiques, image, image + 3
    assert head_rows == [(10, 10, 5 * width)] * 2 + [(10, 10, width)] * 2 + [(10, 10, 4 * width)] * 2
    assert set(results["srcc"]) == {"map", "image_only", "map_without_general"}
    assert all(len(values) == 2 for values in results["srcc"].values())
    assert "MAP without the general critique - image-only" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["eval_split"] == split
    assert f"4 {split} pictures" in (tmp_path / "results.md").read_text()
    parts = split_indices(40, split_seed)
    expected = sorted(f"{i:05d}.jpg" for i in [*parts["train"], *parts[split]])
    assert list(pd.read_csv(tmp_path / "critiques.csv", dtype=str)["image"]) == expected  # only these need critiques


def test_match_gain_interval_brackets_the_difference_and_is_zero_for_equal_answers():
    rng = np.random.default_rng(0)
    hits, constant = (rng.uniform(size=400) < 0.7).astype(float), (rng.uniform(size=400) < 0.35).astype(float)
    low, high = quickstart.match_gain_interval(hits, constant, n=300)
    assert low < hits.mean() - constant.mean() < high and low > 0
    assert quickstart.match_gain_interval(hits, hits, n=50) == [0.0, 0.0]
    low, high = quickstart.match_gain_interval(constant, hits, n=300)
    assert high < 0
