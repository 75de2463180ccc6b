"""The synthetic toy-art dataset: BAID layout, determinism, idempotence, causal scores."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from helpers import ROOT
from mtpg_aiaa.data import read_score_table
from mtpg_aiaa.data import toy
from mtpg_aiaa.data.toy import generate_toy_sample, make_toy_dataset, toy_score

SPLITS = ("train", "val", "test")


def _build(root, seed=0, **kwargs):
    return make_toy_dataset(root, num_images=60, seed=seed, progress=False, **kwargs)


def _snapshot(root):
    """Every file of a build (CSVs, README, marker and image bytes) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "toy"
    return root, _build(root)


def test_layout_and_tables(built):
    root, paths = built
    assert paths["built"] and paths["root"] == str(root)
    names = []
    for split in SPLITS:
        table = read_score_table(paths[f"{split}_csv"])
        assert table.attrs["has_descriptions"]
        assert table.description.str.len().min() > 0
        assert table.score.between(0, 10).all()
        assert all((root / "images" / name).is_file() for name in table.image)
        names += list(table.image)
    assert sorted(names) == [f"{i:05d}.jpg" for i in range(60)]  # every image in exactly one split
    assert [len(read_score_table(paths[f"{s}_csv"])) for s in SPLITS] == [48, 6, 6]
    with Image.open(root / "images" / "00000.jpg") as image:
        assert image.size == (96, 96) and image.mode == "RGB"
    assert (root / "README.txt").read_text().startswith("Synthetic toy-art dataset")
    assert json.loads((root / ".complete").read_text())["num_images"] == 60
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def documented_score_constants() -> tuple[float, float, float]:
    """The logistic's constants as docs/toy_dataset.md writes the score formula."""
    text = (ROOT / "docs" / "toy_dataset.md").read_text()
    assert "z  = (harmony + sharpness + (1 - grain) + balance - 2) / sqrt(4/12)" in text
    assert "z' = z + e,  e ~ N(0, 0.3^2)" in text
    match = re.search(r"score = 10 \* sigmoid\(([-\d.]+) \+ ([\d.]+) z' \+ ([\d.]+) max\(z', 0\)\^2\)", text)
    assert match, "docs/toy_dataset.md no longer states the score formula"
    return tuple(float(group) for group in match.groups())


def test_scores_follow_the_documented_formula(built):
    root, _ = built
    a, b, c = documented_score_constants()
    factors = pd.read_csv(root / "factors.csv")
    z = (factors.harmony + factors.sharpness + (1 - factors.grain) + factors.balance - 2) / np.sqrt(4 / 12)
    noisy = z + factors.score_noise
    documented = 10 / (1 + np.exp(-(a + b * noisy + c * np.maximum(noisy, 0) ** 2)))
    assert np.abs(documented - factors.score).max() < 1e-9  # the generator computes what the docs say
    assert np.abs(toy_score(factors.harmony, factors.sharpness, factors.grain, factors.balance,
                            factors.score_noise) - factors.score).max() < 1e-9  # fmt: skip
    assert 0.2 < factors.score_noise.std() < 0.4  # e ~ N(0, 0.3^2), 60 draws
    # The documented picture factors: blur sigma 0.5 + 2.5 (1 - sharpness) px, noise std 0.10 * grain.
    assert np.abs(factors.blur_sigma - (0.5 + 2.5 * (1 - factors.sharpness))).max() < 1e-9
    assert np.abs(factors.noise_std - 0.10 * factors.grain).max() < 1e-9
    scores = {name: score for split in SPLITS
              for name, score in read_score_table(root / f"{split}_set.csv")[["image", "score"]].values}
    for row in factors.to_dict("records"):
        assert abs(scores[row["image"]] - round(row["score"], 4)) < 1e-9


def test_deterministic_and_seed_dependent(built, tmp_path):
    root, _ = built
    again = tmp_path / "again"
    _build(again, workers=2)  # more workers must not change a byte
    assert _snapshot(again) == _snapshot(root)
    other = tmp_path / "other"
    _build(other, seed=1)
    assert (other / "train_set.csv").read_bytes() != (root / "train_set.csv").read_bytes()
    assert (other / "images" / "00000.jpg").read_bytes() != (root / "images" / "00000.jpg").read_bytes()


def test_idempotent_and_rebuilt_when_parameters_change(tmp_path):
    root = tmp_path / "toy"
    _build(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert _build(root)["built"] is False
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes
    rebuilt = make_toy_dataset(root, num_images=30, progress=False)
    assert rebuilt["built"] and len(list((root / "images").iterdir())) == 30


def test_interrupted_build_never_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real(job)

    real = toy._render_row
    monkeypatch.setattr(toy, "_render_row", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "toy")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        _build(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.fixture(scope="module")
def samples():
    # Factors, scores and descriptions do not depend on the image size: render small.
    return [generate_toy_sample(i, seed=3, image_size=32) for i in range(300)]


def test_score_depends_on_the_factors(samples):
    scores = [s.score for s in samples]
    assert all(0 <= s <= 10 for s in scores)
    for name, sign in (("harmony", 1), ("sharpness", 1), ("grain", -1), ("balance", 1)):
        assert sign * spearmanr([s.factors[name] for s in samples], scores)[0] > 0.25, name
    subjects = [s.factors["subject"] for s in samples]
    assert len(set(subjects)) == 4  # the nuisance factor varies


def test_baid_like_score_distribution(samples):
    scores = np.array([s.score for s in samples])
    assert 4.3 < scores.mean() < 4.9
    assert 0.12 < (scores > 5).mean() < 0.3
    assert np.mean((scores > 3.5) & (scores < 6.5)) > 0.85


def test_descriptions_mention_properties_imperfectly(samples):
    for sample in samples:
        words = len(sample.description.split())
        sentences = len(re.findall(r"[.!?](\s|$)", sample.description))
        assert 20 <= words <= 80 and 1 <= sentences <= 4, sample.description
        assert sample.factors["subject"].split()[0] in sample.description.lower()
    clashing = [s.factors["harmony"] for s in samples if "clashing" in s.description]
    crisp = [s.factors["sharpness"] for s in samples if "crisp" in s.description]
    assert len(clashing) >= 10 and len(crisp) >= 10
    assert np.mean(np.array(clashing) < 0.5) > 0.7  # mostly right ...
    assert np.mean(np.array(clashing) < 0.5) < 1.0 or np.mean(np.array(crisp) >= 0.5) < 1.0  # ... not always


def test_sample_is_deterministic_and_size_independent():
    small, large, again = (generate_toy_sample(7, 0, size) for size in (96, 224, 96))
    assert small.image.shape == (96, 96, 3) and large.image.shape == (224, 224, 3)
    assert small.image.dtype == np.uint8
    assert np.array_equal(small.image, again.image)
    assert (small.factors, small.score, small.description) == (large.factors, large.score, large.description)


def test_data_toy_group_builds_the_set_on_first_use(tmp_path):
    from hydra import compose, initialize_config_dir

    from mtpg_aiaa.data.toy import ensure_dataset

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose("train", overrides=["data=toy", f"data.root={tmp_path / 'toy'}", "data.build.num_images=30",
                                          "data.build.workers=1"])  # fmt: skip
    ensure_dataset(cfg.data)
    table = read_score_table(cfg.data.train_csv)
    assert len(table) == 24 and (Path(cfg.data.image_root) / table["image"][0]).is_file()
    stamp = (tmp_path / "toy" / ".complete").stat().st_mtime_ns
    ensure_dataset(cfg.data)
    assert (tmp_path / "toy" / ".complete").stat().st_mtime_ns == stamp
