"""test.py and demo.py: as commands, and evaluate() on composed configs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from mtpg_aiaa.models.mtpg.checkpoint import load_model, save_official_checkpoint
from mtpg_aiaa.data import read_score_table
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg
from mtpg_aiaa.transforms import build_transform

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAINTINGS = SHARED / "data" / "paintings"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_smoke_data import write_smoke_data  # noqa: E402
from test import evaluate  # noqa: E402


def run_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    return write_smoke_data(tmp_path_factory.mktemp("smoke"), num_images=10, seed=1)


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny"))
    with torch.no_grad():  # spread the head so scores differ visibly between samples
        for p in model.fusion.parameters():
            p.normal_(0, 0.05)
    return save_official_checkpoint(model, tmp_path_factory.mktemp("official") / "model_save.pt")


def compose_test(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("test", overrides=["eval.num_workers=0", "eval.progress=false", "eval.n_bootstrap=20", *overrides])


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


def official_protocol_scores(ckpt: Path, csv: Path, image_root: Path, batch_size: int) -> list[float]:
    """Independent re-run of the authors' protocol: consecutive batches in CSV order."""
    model = load_model(ckpt)
    table = read_score_table(csv)
    transform = build_transform("official")
    from mtpg_aiaa.data import load_rgb_image

    scores = []
    with torch.no_grad():
        for start in range(0, len(table), batch_size):
            rows = table.iloc[start : start + batch_size]
            images = torch.stack([transform(load_rgb_image(image_root / name)) for name in rows["image"]])
            scores += model(images, model.tokenizer(list(rows["description"])))["score"].tolist()
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
    for row in report["results"]:
        assert 0.1 <= row["score"] <= 0.9 and sum(row["levels"].values()) == pytest.approx(1, abs=1e-3)
        assert row["score_10"] == pytest.approx(row["score"] * 10, abs=1e-2)
    assert report["most_aesthetic"] in {r["image"] for r in report["results"]}


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
    assert metrics["n"] == 2 and metrics["majority_acc"] == 0.5 and metrics["srcc"] in (-1.0, 1.0)
    assert metrics["official_checkpoint"] and metrics["batch_size"] == 16
    assert pd.read_csv(out / "predictions.csv")["image"].tolist() == ["20698.jpg", "196817.jpg"]


def test_demo_reads_sidecar_and_warns_without_description(smoke, tmp_path, capsys):
    import demo

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
    import demo

    assert demo.main([str(tmp_path / "a.jpg"), "--ckpt", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert "model_save.pt" in err and "checkpoints/" in err
