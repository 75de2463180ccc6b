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
    assert list(predictions.columns[:3]) == ["image", "score", "pred_0_10"]
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
    batch_pred = pd.read_csv(tmp_path / "batch" / "predictions.csv")["pred_0_10"].to_numpy() / 10
    expected = official_protocol_scores(official_ckpt, smoke["csv"], smoke["image_root"], batch_size=4)
    assert batch_pred == pytest.approx(expected, abs=1e-5)

    evaluate(compose_test(*cfg_overrides(cfg), "eval.batching=per_image"), tmp_path / "alone")
    alone_pred = pd.read_csv(tmp_path / "alone" / "predictions.csv")["pred_0_10"].to_numpy() / 10
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
    assert [row["pred"] for row in report["results"]] == pytest.approx(expected, abs=1e-3)
    for row in report["results"]:
        assert row["pred_0_10"] == pytest.approx(row["pred"] * 10, abs=1e-2)
    best = max(report["results"], key=lambda row: row["pred"])["image"]
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
    assert (predictions["pred_0_10"].to_numpy() / 10) == pytest.approx(expected, abs=1e-5)
    # With two images SRCC is +-1 whatever the model does; what can fail is its sign and the
    # accuracy, which must follow the predictions written beside them.
    agree = np.sign(np.diff(predictions["pred_0_10"])) == np.sign(np.diff(predictions["score"]))
    assert metrics["srcc"] == (1.0 if agree[0] else -1.0)
    assert metrics["acc"] == pytest.approx(np.mean((predictions["pred_0_10"] > 5) == (predictions["score"] > 5)))


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


# -- the score CLI (issue 22 item 3, issue 21 item 8): in-process main(argv) -----------------
def score_cli(*argv: str) -> int:
    from mtpg_aiaa.cli import main

    return main(["score", *argv, "--no-progress", "--device", "cpu"])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_score_cli_prints_a_table_and_reads_the_system_from_the_file(official_ckpt, smoke, capsys, caplog):
    images = [str(Path(smoke["image_root"]) / name) for name in ("0000.jpg", "0001.jpg")]
    assert score_cli(*images, "--weights", str(official_ckpt), "--descriptions", str(smoke["csv"])) == 0
    captured = capsys.readouterr()
    header, *rows = captured.out.strip().splitlines()
    assert header.split() == ["image", "pred", "pred_0_10"] and len(rows) == 2 and rows[0].split()[0] == images[0]
    assert "scored 2 of 2 image(s) with mtpg" in captured.err
    with caplog.at_level("WARNING"):
        assert score_cli(*images, "--weights", str(official_ckpt), "--model", "mtpg") == 0
    # a log line saying what it costs and how to get descriptions, not a UserWarning
    assert "no descriptions given" in caplog.text and "scripts/describe.py" in caplog.text
    capsys.readouterr()
    assert score_cli(*images, "--weights", str(official_ckpt), "--model", "cgiaa") == 2
    assert "holds a 'mtpg' model, not --model 'cgiaa'" in one_line_error(capsys)


def test_score_cli_batch_size_is_honoured_or_refused_with_the_reason(official_ckpt, smoke, tmp_path, capsys, monkeypatch):
    import mtpg_aiaa.api

    image = str(Path(smoke["image_root"]) / "0000.jpg")
    assert score_cli(image, "--weights", str(official_ckpt), "--batch-size", "4") == 2
    assert "scores one image at a time" in one_line_error(capsys)
    for bad in ("0", "-1"):
        assert score_cli(image, "--weights", str(official_ckpt), "--batch-size", bad) == 2
        assert "--batch-size must be at least 1" in one_line_error(capsys)
    from mtpg_aiaa.models import create_model  # a batch-independent fusion: the batch size is the user's

    torch.manual_seed(0)
    model = create_model("mtpg", backbone="LongCLIP-tiny", fusion="token", fusion_heads=4)
    path = model.save(tmp_path / "token.safetensors")
    seen: list[int] = []

    class Recording(mtpg_aiaa.api.DataLoader):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["batch_size"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mtpg_aiaa.api, "DataLoader", Recording)
    assert score_cli(str(smoke["image_root"]), "--weights", str(path), "--batch-size", "3") == 0
    assert seen == [3]


def test_score_cli_checks_out_before_any_work(official_ckpt, smoke, tmp_path, capsys, monkeypatch):
    import mtpg_aiaa.models.loading

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(mtpg_aiaa.models.loading, "load_model", no_work)
    image = tmp_path / "0000.jpg"
    shutil.copy(Path(smoke["image_root"]) / "0000.jpg", image)
    before = image.read_bytes()
    assert score_cli(str(image), "--weights", str(official_ckpt), "--out", str(image)) == 2
    assert "is one of the input images" in one_line_error(capsys) and image.read_bytes() == before
    assert score_cli(str(image), "--weights", str(official_ckpt), "--out", str(tmp_path)) == 2
    assert "is a directory" in one_line_error(capsys)
    assert score_cli(str(image), "--weights", str(official_ckpt), "--out", str(tmp_path / "absent" / "s.csv")) == 2
    assert "does not exist" in one_line_error(capsys)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert score_cli(str(image), "--weights", str(official_ckpt), "--out", str(locked / "s.csv")) == 2
        assert "not writable" in one_line_error(capsys)


def test_score_cli_exits_2_when_nothing_was_scored_and_leaves_no_stale_skipped_list(official_ckpt, smoke, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "scores.csv"
    assert score_cli(str(broken), "--weights", str(official_ckpt), "--on-bad-image", "skip", "--out", str(out)) == 2
    assert "no image could be scored (1 skipped" in one_line_error(capsys) and not out.exists()
    stale = tmp_path / "scores.skipped.csv"
    stale.write_text("image,reason\nold.jpg,old\n")
    image = str(Path(smoke["image_root"]) / "0000.jpg")
    assert score_cli(image, "--weights", str(official_ckpt), "--out", str(out)) == 0
    assert pd.read_csv(out)["image"].tolist() == [image] and not stale.exists()


def test_score_cli_bad_device_and_missing_files_are_one_line(official_ckpt, smoke, capsys):
    from mtpg_aiaa.cli import main

    image = str(Path(smoke["image_root"]) / "0000.jpg")
    assert main(["score", image, "--weights", str(official_ckpt), "--device", "bogus"]) == 2
    assert "device 'bogus' is not a device name" in one_line_error(capsys)
    if not torch.cuda.is_available():
        assert main(["score", image, "--weights", str(official_ckpt), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in one_line_error(capsys)
    assert score_cli(image, "--weights", str(official_ckpt), "--descriptions", "absent.csv") == 2
    assert "--descriptions file absent.csv does not exist" in one_line_error(capsys)


def test_score_cli_reads_every_critique_from_one_csv(tmp_path, capsys):
    from PIL import Image

    import mtpg_aiaa
    from mtpg_aiaa.models import create_model

    clip = dict(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, text_width=64,
                text_layers=1, context_length=77)  # fmt: skip
    torch.manual_seed(0)
    path = create_model("cgiaa", clip=clip).save(tmp_path / "cgiaa.safetensors")
    for i, colour in enumerate(["red", "navy"]):
        Image.new("RGB", (36, 28), colour).save(tmp_path / f"{i}.png")
    names = ["color", "composition", "dof", "general"]
    critiques = pd.DataFrame({"image": ["0.png", "1.png"], **{n: [f"{n} is warm", f"{n} is cold"] for n in names}})
    critiques.to_csv(tmp_path / "critiques.csv", index=False)
    out = tmp_path / "scores.csv"
    images = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    assert score_cli(*images, "--weights", str(path), "--texts", str(tmp_path / "critiques.csv"), "--out", str(out)) == 0
    assert "unbounded" in capsys.readouterr().out  # CG-IAA's linear head states its range honestly
    expected = mtpg_aiaa.create_scorer("cgiaa", weights=path, device="cpu")(
        images, texts={n: critiques[n].tolist() for n in names})  # fmt: skip
    assert pd.read_csv(out)["pred"].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    critiques.drop(columns="dof").to_csv(tmp_path / "three.csv", index=False)
    assert score_cli(*images, "--weights", str(path), "--texts", str(tmp_path / "three.csv")) == 2
    assert "'dof'" in one_line_error(capsys)


def test_score_help_starts_without_torch():
    """Start-up: ``--help`` of the CLI imports nothing heavy (measured: docs/results in the report)."""
    import time

    for args in (["--help"], ["score", "--help"]):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "mtpg_aiaa", *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        seconds = time.perf_counter() - start
        assert result.returncode == 0 and "usage:" in result.stdout
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & {"torch", "numpy", "pandas", "PIL", "open_clip", "transformers"}, sorted(imported)[:20]
        assert seconds < 5.0  # 0.3 s on an idle 2-core host; the bound leaves room for a loaded CI machine
