"""demo.py: one path for every system, the system read from the weights file, one-line errors,
and ``--help`` without torch."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import ROOT, load_script
from mtpg_aiaa.models.registry import create_model

demo = load_script("demo.py")
CRITIQUES = {"color": "warm light", "composition": "centred", "dof": "all sharp", "general": "calm"}


@pytest.fixture(scope="module")
def cgiaa_file(tmp_path_factory):
    """A tiny random CG-IAA scorer saved as train.py saves one, and two images."""
    root = tmp_path_factory.mktemp("cgiaa_demo")
    path = create_model("cgiaa", clip="LongCLIP-tiny").save(root / "tiny_cgiaa.safetensors")
    images = []
    for i, level in enumerate((40, 200)):
        images.append(root / f"{i}.jpg")
        Image.fromarray(np.full((32, 32, 3), level, dtype=np.uint8)).save(images[-1])
    return path, images


def test_help_imports_no_torch():
    code = ("import runpy, sys; sys.argv = ['demo.py', '--help']\n"
            "try:\n    runpy.run_path('demo.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stderr.strip() == "False" and "--system {aesnet,cgiaa,mtpg}" in result.stdout


def test_a_cgiaa_file_without_its_texts_is_one_line_naming_what_to_give(cgiaa_file, capsys):
    path, images = cgiaa_file
    assert demo.main([str(images[0]), "--ckpt", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cgiaa model that reads the texts color, composition, dof, general" in err
    assert "--texts" in err and "--weights DIR" in err and "CLIP ViT" not in err
    assert demo.main([str(images[0]), "--ckpt", str(path), "--system", "mtpg"]) == 2
    assert "holds a 'cgiaa' model, not 'mtpg'" in capsys.readouterr().err


def test_a_cgiaa_file_scores_with_texts_from_a_table(cgiaa_file, tmp_path, capsys):
    path, images = cgiaa_file
    table = tmp_path / "critiques.csv"
    pd.DataFrame([{"image": image.name, **CRITIQUES} for image in images]).to_csv(table, index=False)
    capsys.readouterr()
    assert demo.main([*map(str, images), "--ckpt", str(path), "--texts", str(table), "--device", "cpu", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["system"] == "cgiaa" and [r["texts"] for r in shown["results"]] == [CRITIQUES, CRITIQUES]
    from mtpg_aiaa.models.cgiaa.explain import score_with_critiques
    from mtpg_aiaa.models.loading import load_model

    import torch

    again = score_with_critiques(load_model(path), images, [CRITIQUES] * 2, torch.device("cpu"))
    assert [r["pred"] for r in shown["results"]] == [r["score"] for r in again]
    assert demo.main([*map(str, images), "--ckpt", str(path), "--texts", str(table)]) == 0  # the table
    out = capsys.readouterr().out
    assert "[general] calm" in out and "more aesthetic:" in out
