"""Named texts and score distributions per row, and the prediction table every system shares."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from PIL import Image

from mtpg_aiaa.data import AestheticsDataset, BadInputError, collate_samples
from mtpg_aiaa.data.named_texts import read_table
from mtpg_aiaa.models.base import Scorer, ScoreRange
from mtpg_aiaa.eval.predictions import prediction_frame


@pytest.fixture
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    pd.DataFrame({"image": ["a.png", "b.png"], "score": [2.0, 8.0], "color_note": ["warm reds", "cold blues"],
                  **{f"dist_{k}": [k, 10 - k] for k in range(1, 11)}}).to_csv(path, index=False)  # fmt: skip
    return path


def test_texts_from_columns_csv_and_json_files(scores_csv, tmp_path):
    (tmp_path / "critiques.csv").write_text("image,composition\nb.png,centred\na.png,off-centre\n")
    (tmp_path / "light.json").write_text(json.dumps({"a.png": {"light": "soft"}, "b.png": {"light": "harsh"}}))
    (tmp_path / "dof.json").write_text(json.dumps([{"image": "a.png", "dof": "deep"}, {"image": "b.png", "dof": "shallow"}]))
    texts = {"color": "color_note", "composition": {"file": str(tmp_path / "critiques.csv")},
             "light": {"file": str(tmp_path / "light.json")}, "dof": {"file": str(tmp_path / "dof.json")}}  # fmt: skip
    table = read_table(scores_csv, texts=texts)
    assert table.attrs["text_names"] == ["color", "composition", "light", "dof"]
    assert table["composition"].tolist() == ["off-centre", "centred"]
    assert table["light"].tolist() == ["soft", "harsh"] and table["dof"].tolist() == ["deep", "shallow"]
    assert table.attrs["distribution_columns"] == [f"dist_{k}" for k in range(1, 11)]


def test_missing_text_and_bad_distribution_are_named(scores_csv, tmp_path):
    (tmp_path / "partial.csv").write_text("image,mood\na.png,calm\n")
    with pytest.raises(BadInputError, match=r"'b.png' has no 'mood' text in .*partial.csv"):
        read_table(scores_csv, texts={"mood": {"file": str(tmp_path / "partial.csv")}})
    with pytest.raises(BadInputError, match="reserved"):
        read_table(scores_csv, texts={"score": "color_note"})
    broken = tmp_path / "broken.csv"
    broken.write_text("image,score,dist_1,dist_2\na.png,3,1,-2\n")
    with pytest.raises(BadInputError, match=r"broken.csv, line 2, column 'dist_2'"):
        read_table(broken)


def test_dataset_gives_texts_tokens_and_distribution(scores_csv, tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    table = read_table(scores_csv, texts={"color": "color_note"})

    def tokenize(texts):  # a stand-in for Scorer.tokenize: one id per character count
        return {name: torch.tensor([[len(t)] for t in values]) for name, values in texts.items()}

    dataset = AestheticsDataset(table, tmp_path, lambda image: torch.zeros(3, 4, 4), tokenize_texts=tokenize,
                                text_names=("color",))  # fmt: skip
    batch = collate_samples([dataset[0], dataset[1]])
    assert batch["texts"]["color"] == ["warm reds", "cold blues"]
    assert batch["tokens"]["color"].tolist() == [[9], [10]]
    assert batch["distribution"].shape == (2, 10) and torch.allclose(batch["distribution"].sum(1), torch.ones(2))
    with pytest.raises(BadInputError, match=r"reads text\(s\) \['mood'\]"):
        AestheticsDataset(table, tmp_path, lambda image: image, text_names=("mood",))


class _TenBinScorer(Scorer):  # the interface prediction_frame reads, nothing more
    score_range = ScoreRange(1.0, 10.0)
    distribution_values = tuple(range(1, 11))


def test_prediction_rows_rescale_and_name_distribution_columns():
    batch = {"index": torch.tensor([0, 1]), "image_name": ["a", "b"], "score": torch.tensor([2.0, 8.0]),
             "target": torch.tensor([0.2, 0.8])}  # fmt: skip
    distribution = torch.full((2, 10), 0.1)
    frame = prediction_frame(batch, {"score": torch.tensor([1.0, 5.5]), "distribution": distribution}, _TenBinScorer())
    assert frame["pred_0_1"].tolist() == pytest.approx([0.0, 0.5]) and frame["pred"].tolist() == [1.0, 5.5]
    assert [c for c in frame.columns if c.startswith("dist_")] == [f"dist_{k}" for k in range(1, 11)]
    plain = prediction_frame(batch, {"score": torch.tensor([1.0, 10.0])}, _TenBinScorer())
    assert not any(c.startswith(("dist_", "prob_")) for c in plain.columns)
