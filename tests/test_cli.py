"""test.py and demo.py: as commands, and evaluate() on composed configs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import PAINTINGS, ROOT, compose_config, load_script
from mtpg_aiaa.data import load_rgb_image, read_score_table
from mtpg_aiaa.models.mtpg.checkpoint import load_model
from mtpg_aiaa.transforms import build_transform

evaluate = load_script("test.py").evaluate
demo = load_script("demo.py")


def run_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    return make_smoke(10, seed=1)


def compose_test(*overrides: str):
    return compose_config("test", "eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=20", *overrides)


@pytest.mark.slow
def test_test_py_command_writes_results_and_skips_bad_images(smoke, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(smoke["image_root"], images)
    (images / "0003.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    result = run_command(
        "test.py", f"ckpt={smoke['ckpt']}", f"data.csv={smoke['csv']}", f"data.image_root={images}",
        "data.on_bad_image=skip", "eval.num_workers=0", "eval.n_bootstrap=20", f"hydra.run.dir={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SRCC" in result.stdout and "skipped 1" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 9 and metrics["n_skipped"] == 1
    predictions = pd.read_csv(out / "predictions.csv")
    labels = pd.read_csv(smoke["csv"])
    assert list(predictions["image"]) == [name for name in labels["image"] if name != "0003.jpg"]
    assert list(predictions.columns[:3]) == ["image", "score", "pred"]
    assert predictions.filter(like="prob_").sum(axis=1).round(5).eq(1).all()
    assert pd.read_csv(out / "skipped.csv")["image_name"].tolist() == ["0003.jpg"]
    assert (out / "scatter.png").stat().st_size > 1000


def test_test_py_fails_clearly_on_bad_image_by_default(smoke, tmp_path):
    bad_csv = tmp_path / "bad.csv"
    pd.DataFrame({"image": ["0000.jpg", "missing.jpg"], "score": [4.0, 6.0], "comment": ["a", "b"]}).to_csv(bad_csv, index=False)
    cfg = compose_test(f"ckpt={smoke['ckpt']}", f"data.csv={bad_csv}", f"data.image_root={smoke['image_root']}")
    with pytest.raises(Exception, match="missing.jpg"):
        evaluate(cfg, tmp_path / "run")


def official_protocol_scores(ckpt: Path, table: Path | pd.DataFrame, image_root: Path, batch_size: int) -> list[float]:
    """Independent re-run of the authors' protocol: consecutive batches in CSV order
    (``batch_size=1``: every image alone, as the official demo does)."""
    model = load_model(ckpt)
    table = read_score_table(table) if isinstance(table, Path) else table
    transform = build_transform("official")
    scores = []
    with torch.no_grad():
        for start in range(0, len(table), batch_size):
            rows = table.iloc[start : start + batch_size]
            images = torch.stack([transform(load_rgb_image(image_root / name)) for name in rows["image"]])
            scores += model.score_tensors(images, model.tokenizer(list(rows["description"])))["score"].tolist()
    return scores


def test_official_checkpoint_follows_the_authors_protocol(official_ckpt, smoke, tmp_path):
    cfg = compose_test(f"ckpt={official_ckpt}", f"data.csv={smoke['csv']}", f"data.image_root={smoke['image_root']}",
                       "eval.batch_size=4")  # fmt: skip
    metrics = evaluate(cfg, tmp_path / "batch")
    assert metrics["official_checkpoint"] and metrics["preprocess"] == "official" and metrics["prompts"] == "official"
    batch_pred = pd.read_csv(tmp_path / "batch" / "predictions.csv")["pred"].to_numpy() / 10
    expected = official_protocol_scores(official_ckpt, smoke["csv"], smoke["image_root"], batch_size=4)
    assert batch_pred == pytest.approx(expected, abs=1e-5)

    evaluate(compose_test(*cfg_overrides(cfg), "eval.batching=per_image"), tmp_path / "alone")
    alone_pred = pd.read_csv(tmp_path / "alone" / "predictions.csv")["pred"].to_numpy() / 10
    alone_expected = official_protocol_scores(official_ckpt, smoke["csv"], smoke["image_root"], batch_size=1)
    assert alone_pred == pytest.approx(alone_expected, abs=1e-5)
    assert abs(alone_pred - batch_pred).max() > 1e-4, "official fusion should depend on the batch"


def cfg_overrides(cfg) -> list[str]:
    return [f"ckpt={cfg.ckpt}", f"data.csv={cfg.data.csv}", f"data.image_root={cfg.data.image_root}", "eval.batch_size=4"]


def test_baid_group_builds_paths(tmp_path):
    cfg = compose_test("ckpt=x", "data=baid", f"data.root={tmp_path}", "data.split=val")
    assert cfg.data.csv == f"{tmp_path}/val_set.csv" and cfg.data.image_root == f"{tmp_path}/images"


@pytest.mark.skipif(not PAINTINGS.is_dir(), reason="../shared/data/paintings is absent (only in the project's CI)")
@pytest.mark.slow
def test_demo_on_the_real_paintings(smoke, tmp_path):
    descriptions = json.loads((PAINTINGS / "descriptions.json").read_text())
    result = run_command(
        "demo.py", str(PAINTINGS / "20698.jpg"), str(PAINTINGS / "196817.jpg"), "--ckpt", str(smoke["ckpt"]),
        "--desc1", descriptions["20698.jpg"], "--desc2", descriptions["196817.jpg"], "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in report["results"]] == ["20698.jpg", "196817.jpg"]
    # The demo scores each painting alone with the official preprocessing: recompute that here.
    table = pd.DataFrame({"image": ["20698.jpg", "196817.jpg"], "score": [3.9546, 9.400612],
                          "description": [descriptions["20698.jpg"], descriptions["196817.jpg"]]})  # fmt: skip
    expected = official_protocol_scores(smoke["ckpt"], table, PAINTINGS, batch_size=1)
    assert [row["score"] for row in report["results"]] == pytest.approx(expected, abs=1e-3)
    for row in report["results"]:
        assert row["score_10"] == pytest.approx(row["score"] * 10, abs=1e-2)
    best = max(report["results"], key=lambda row: row["score"])["image"]
    assert report["most_aesthetic"] == best


@pytest.mark.skipif(not PAINTINGS.is_dir(), reason="../shared/data/paintings is absent (only in the project's CI)")
@pytest.mark.slow
def test_test_py_on_the_real_paintings(official_ckpt, tmp_path):
    descriptions = json.loads((PAINTINGS / "descriptions.json").read_text())
    csv = tmp_path / "paintings.csv"
    pd.DataFrame({"image": ["20698.jpg", "196817.jpg"], "score": [3.9546, 9.400612],
                  "comment": [descriptions["20698.jpg"], descriptions["196817.jpg"]]}).to_csv(csv, index=False)  # fmt: skip
    out = tmp_path / "run"
    result = run_command("test.py", f"ckpt={official_ckpt}", f"data.csv={csv}", f"data.image_root={PAINTINGS}",
                         "eval.num_workers=0", "eval.n_bootstrap=20", f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["official_checkpoint"] and metrics["batch_size"] == 16 and metrics["n"] == 2
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions["image"].tolist() == ["20698.jpg", "196817.jpg"]
    # Both paintings form one official batch of (up to) 16: the scores are that batch's.
    expected = official_protocol_scores(official_ckpt, read_score_table(csv), PAINTINGS, batch_size=16)
    assert (predictions["pred"].to_numpy() / 10) == pytest.approx(expected, abs=1e-5)
    # With two images SRCC is +-1 whatever the model does; what can fail is its sign and the
    # accuracy, which must follow the predictions written beside them.
    agree = np.sign(np.diff(predictions["pred"])) == np.sign(np.diff(predictions["score"]))
    assert metrics["srcc"] == (1.0 if agree[0] else -1.0)
    assert metrics["acc"] == pytest.approx(np.mean((predictions["pred"] > 5) == (predictions["score"] > 5)))


def test_demo_reads_sidecar_and_warns_without_description(smoke, tmp_path, capsys):
    image = smoke["image_root"] / "0001.jpg"
    sidecar = smoke["image_root"] / "0001.txt"
    sidecar.write_text("A vivid painting.\n")
    try:
        assert demo.find_description(image, None) == "A vivid painting."
    finally:
        sidecar.unlink()
    with pytest.warns(UserWarning, match="no description"):
        assert demo.find_description(image, None) == ""
    assert demo.main([str(image), "--ckpt", str(smoke["ckpt"]), "--desc1", "x"]) == 0
    assert "0001.jpg" in capsys.readouterr().out


def test_demo_without_checkpoint_says_what_to_download(tmp_path, capsys):
    assert demo.main([str(tmp_path / "a.jpg"), "--ckpt", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "model_save.pt" in err and "checkpoints/" in err
