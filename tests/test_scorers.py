"""The scorer interface with MTPG-AIAA on it: the registry, load_model by file content,
the Python API and ``python -m mtpg_aiaa score``/``list``, on a tiny random model."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import mtpg_aiaa
from mtpg_aiaa.backbone import CheckpointError
from mtpg_aiaa.cli import main as cli_main
from mtpg_aiaa.data.errors import BadInputError
from mtpg_aiaa.errors import SettingError
from mtpg_aiaa.models import ScoreRange, create_model, list_models
from mtpg_aiaa.models.base import read_metadata
from mtpg_aiaa.models.loading import identify, load_model
from mtpg_aiaa.models.mtpg.checkpoint import save_official_checkpoint

TINY = {"backbone": "LongCLIP-tiny", "fusion": "token", "fusion_heads": 4, "prompts": "clean"}


def _tiny(**overrides):
    torch.manual_seed(0)
    model = create_model("mtpg", **{**TINY, **overrides}).eval()
    with torch.no_grad():
        for parameter in model.fusion.parameters():
            parameter.normal_(std=0.2)
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    model = _tiny()
    path = model.save(folder / "tiny.weights")  # no telling suffix: files are read by content
    return model, path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_registry_builds_a_scorer_with_its_range():
    assert "mtpg" in list_models() and mtpg_aiaa.list_models() == list_models()
    model = _tiny()
    assert model.system == "mtpg" and model.score_range == ScoreRange(0.0, 1.0)
    with pytest.raises(KeyError, match="registered: .*mtpg"):
        create_model("no-such-system")


def test_forward_batch_matches_the_tensor_call():
    model = _tiny()
    images = torch.randn(2, 3, 224, 224)
    tokens = model.tokenize({"description": ["a dark sea", "a bright field of flowers"]})
    by_batch = model({"image": images, "tokens": tokens})
    by_tensors = model.score_tensors(images, tokens["description"])
    assert torch.equal(by_batch["score"], by_tensors["score"])
    assert by_batch["distribution"].shape == (2, 5) and torch.allclose(by_batch["distribution"].sum(1), torch.ones(2))


def test_saved_file_records_system_and_range_and_loads_by_content(weights, tmp_path):
    model, path = weights
    metadata = read_metadata(path)
    assert metadata["system"] == "mtpg" and json.loads(metadata["score_range"])["high"] == 1.0
    loaded = load_model(path)
    assert loaded.weights_kind.startswith("mtpg weights (safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    official = save_official_checkpoint(_tiny(fusion="official"), tmp_path / "released.safetensors")  # wrong suffix
    assert identify(official) == "mtpg weights (PyTorch state dict)"
    assert load_model(official).config.fusion == "official"


def test_files_written_before_systems_were_recorded_load_as_mtpg(weights, tmp_path):
    from safetensors.torch import load_file, save_file

    model, path = weights
    old = {k: v for k, v in read_metadata(path).items() if k not in ("system", "score_range")}
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=old)
    assert load_model(tmp_path / "old.safetensors").system == "mtpg"


def _training_state(model, target="mtpg_aiaa.models.mtpg.build_mtpg_model"):
    config = {"model": {"_target_": target, **TINY, "backbone_weights": "absent.pt", "freeze": "frozen"}}
    return {"model": model.state_dict(), "optimizer": {"state": {}}, "scheduler": {}, "step": 7, "epoch": 0,
            "batch_in_epoch": 0, "config": config}  # fmt: skip


def test_training_checkpoint_loads_its_model_or_says_what_it_is(weights, tmp_path):
    model, _ = weights
    torch.save(_training_state(model), tmp_path / "last.pt")
    loaded = load_model(tmp_path / "last.pt")
    assert "training checkpoint" in loaded.weights_kind and "step 7" in loaded.weights_kind
    assert torch.equal(loaded.state_dict()["logit_scale"], model.state_dict()["logit_scale"])
    torch.save(_training_state(model, target="elsewhere.build_other"), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt is a training checkpoint .*best.safetensors") as info:
        load_model(tmp_path / "other.pt")
    assert "\n" not in str(info.value)
    (tmp_path / "noise.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="noise.bin is neither"):
        load_model(tmp_path / "noise.bin")


def test_api_scores_a_folder_like_the_model(weights, images):
    model, path = weights
    scorer = mtpg_aiaa.create_scorer("mtpg", weights=path, device="cpu")
    texts = {"p0.png": "a dark sea", "p1.png": "a field", "p2.png": "a portrait"}
    result = scorer.score([images], descriptions=texts)
    assert result.images == [str(images / f"p{i}.png") for i in range(3)]
    assert result.score_range == ScoreRange(0.0, 1.0) and len(result.distributions) == 3
    transform = model.build_transform()
    pixels = torch.stack([transform(Image.open(images / f"p{i}.png").convert("RGB")) for i in range(3)])
    expected = model.score_tensors(pixels, model.tokenizer(list(texts.values())))["score"]
    assert result.scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert result.to_frame()["pred_0_10"].tolist() == pytest.approx([10 * s for s in result.scores])


def test_api_weights_only_from_local_files(weights):
    with pytest.raises(CheckpointError, match="never downloaded.*checkpoints/README.md"):
        mtpg_aiaa.create_scorer("mtpg", weights="checkpoints/absent_model_save.pt")
    with pytest.raises(CheckpointError, match="is a URL"):
        mtpg_aiaa.create_scorer("mtpg", weights="https://example.org/model_save.pt")
    with pytest.raises(KeyError, match="unknown model"):
        mtpg_aiaa.create_scorer("nima", weights=weights[1])


def test_cli_scores_skips_bad_images_and_lists(weights, images, tmp_path, capsys):
    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    descriptions = tmp_path / "descriptions.csv"
    pd.DataFrame({"image": ["p0.png", "p1.png", "p2.png", "broken.jpg"], "comment": ["a", "b", "c", "d"]}).to_csv(
        descriptions, index=False)  # fmt: skip
    out = tmp_path / "scores.csv"
    argv = ["score", "--model", "mtpg", "--weights", str(weights[1]), str(folder), "--descriptions", str(descriptions),
            "--out", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    assert cli_main(argv) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert cli_main([*argv, "--on-bad-image", "skip"]) == 0
    captured = capsys.readouterr()
    assert "scored 3 of 4" in captured.out and "0-1" in captured.out and "skipped 1" in captured.err
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["image", "pred", "pred_0_10"] and "prob_good" in table.columns
    assert pd.read_csv(tmp_path / "scores.skipped.csv")["image"].str.endswith("broken.jpg").all()
    assert cli_main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "mtpg" in listed and "mtpg/finetune" in listed and "ava" in listed


def test_test_py_scores_a_training_checkpoint_and_says_what_it_was(weights, tmp_path):
    from hydra import compose, initialize_config_dir

    from helpers import ROOT as root, load_script

    write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data
    evaluate = load_script("test.py").evaluate

    smoke = write_smoke_data(tmp_path / "smoke", num_images=4, seed=2)
    model, _ = weights
    torch.save(_training_state(model), tmp_path / "last.pt")
    with initialize_config_dir(config_dir=str(root / "configs"), version_base="1.3"):
        cfg = compose("test", overrides=[f"ckpt={tmp_path / 'last.pt'}", f"data.csv={smoke['csv']}",
                                         f"data.image_root={smoke['image_root']}", "eval.num_workers=0",
                                         "eval.n_bootstrap=0", "eval.progress=false"])  # fmt: skip
    metrics = evaluate(cfg, tmp_path / "run")
    assert metrics["official_checkpoint"] is False and metrics["system"] == "mtpg"
    assert metrics["checkpoint_kind"].startswith("mtpg training checkpoint")
    assert "prob_perfect" in pd.read_csv(tmp_path / "run" / "predictions.csv").columns



# -- the scorer as pyiqa users call it (issue 22 item 2, issue 21 item 10) ------------------
def _pixels(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_scorer_is_callable_on_a_path_a_folder_a_pil_image_and_tensors(weights, images):
    from mtpg_aiaa.api import TENSOR_PATH_TOLERANCE

    model, path = weights
    scorer = mtpg_aiaa.create_scorer(None, weights=path, device="cpu")  # the file names its system
    assert scorer.lower_better is False and scorer.score_range == ScoreRange(0.0, 1.0)
    texts = ["a dark sea", "a field", "a portrait"]
    files = [images / f"p{i}.png" for i in range(3)]
    by_file = scorer([str(f) for f in files], descriptions=texts)
    assert by_file.shape == (3,) and not by_file.requires_grad
    one = scorer(str(files[0]), descriptions=[texts[0]])  # a string is one path, not its characters
    assert one.tolist() == pytest.approx(by_file[:1].tolist(), abs=1e-6)
    assert scorer(str(images), descriptions=texts).tolist() == pytest.approx(by_file.tolist(), abs=1e-6)
    assert scorer(Image.open(files[1]), descriptions=[texts[1]]).tolist() == pytest.approx(by_file[1:2].tolist(), abs=1e-6)
    # A tensor goes through the differentiable preprocessing: within the stated tolerance of the file.
    for i, file in enumerate(files):
        alone = scorer(_pixels(file), descriptions=[texts[i]])  # [3, H, W]
        assert abs(float(alone[0]) - float(by_file[i])) <= TENSOR_PATH_TOLERANCE
    same_size = torch.stack([_pixels(files[0]), _pixels(files[0])])  # [B, 3, H, W]
    assert scorer(same_size, descriptions=texts[:2]).shape == (2,)
    with pytest.raises(BadInputError, match=r"\[3, H, W\]"):
        scorer(torch.rand(1, 1, 8, 8), descriptions=["x"])


def test_as_loss_backpropagates_into_the_pixels(weights, images):
    _, path = weights
    pixels = _pixels(images / "p0.png").unsqueeze(0).requires_grad_(True)
    loss_fn = mtpg_aiaa.create_scorer("mtpg", weights=path, device="cpu", as_loss=True)
    score = loss_fn(pixels, descriptions=["a dark sea"])
    assert score.requires_grad
    (-score.sum()).backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.model.parameters())  # the scorer's weights stay fixed
    plain = mtpg_aiaa.create_scorer("mtpg", weights=path, device="cpu")
    assert not plain(pixels.detach(), descriptions=["a dark sea"]).requires_grad


def test_texts_that_could_go_to_the_wrong_image_are_refused(weights, tmp_path, caplog):
    _, path = weights
    rng = np.random.default_rng(1)
    for folder in ("a", "b"):
        (tmp_path / "set" / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "set" / folder / "x.jpg")
    scorer = mtpg_aiaa.create_scorer("mtpg", weights=path, device="cpu")
    with pytest.raises(SettingError, match="one string"):
        scorer.score([tmp_path / "set" / "a" / "x.jpg"], descriptions="one text")
    with pytest.raises(BadInputError, match=r"a/x.jpg and .*b/x.jpg share the file name x.jpg"):
        scorer.score(str(tmp_path / "set"), descriptions={"x.jpg": "a sea"}, recursive=True)
    keyed = scorer.score(str(tmp_path / "set"), descriptions={"a/x.jpg": "a sea", "b/x.jpg": "a field"}, recursive=True)
    assert len(keyed.scores) == 2
    with caplog.at_level("WARNING"):
        scorer.score(str(tmp_path / "set" / "a"))
    assert "scripts/describe.py" in caplog.text and "docs/descriptions.md" in caplog.text


def test_cgiaa_states_its_unbounded_head_and_offers_a_bounded_one(tmp_path):
    clip = dict(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, text_width=64,
                text_layers=1, context_length=77, vocab_size=49408)  # fmt: skip
    torch.manual_seed(0)
    released = create_model("cgiaa", clip=clip, score_low=0.0, score_high=1.0)
    assert released.score_range.bounded is False and "unbounded" in released.score_range.describe()
    bounded = create_model("cgiaa", clip=clip, score_low=1.0, score_high=10.0, bounded=True)
    with torch.no_grad():
        bounded.head.bias.fill_(50.0)  # far outside: the sigmoid holds it inside the stated range
    tokens = bounded.tokenize({name: ["warm"] * 2 for name in bounded.text_names})
    score = bounded({"image": torch.rand(2, 3, 32, 32), "tokens": tokens})["score"]
    assert bounded.score_range.bounded and ((score >= 1.0) & (score <= 10.0)).all()
    # A file written before the option existed has no "bounded" key: it loads as the linear head it was.
    path = released.save(tmp_path / "old.safetensors")
    from safetensors.torch import load_file, save_file

    metadata = read_metadata(path)
    config = json.loads(metadata["config"])
    config.pop("bounded")
    save_file(load_file(str(path)), str(tmp_path / "older.safetensors"), metadata={**metadata, "config": json.dumps(config)})
    assert load_model(tmp_path / "older.safetensors").score_range.bounded is False


def test_every_scoring_path_runs_the_one_predict_loop_over_the_one_image_dataset():
    """test.py, the API (and so the CLI), the feature cache and the CG-IAA / AesNet validation
    score through ``eval.predict.predict``; their image tables are ``data.AestheticsDataset``."""
    import importlib

    from helpers import load_script
    from mtpg_aiaa.data import AestheticsDataset
    from mtpg_aiaa.eval.predict import predict

    for name in ("mtpg_aiaa.api", "mtpg_aiaa.models.mtpg.feature_cache", "mtpg_aiaa.engine.tasks.cgiaa.score",
                 "mtpg_aiaa.engine.tasks.aesnet.downstream"):  # fmt: skip
        assert importlib.import_module(name).predict is predict, name
    assert load_script("test.py").predict is predict
    common = importlib.import_module("mtpg_aiaa.engine.tasks.cgiaa.common")
    assert not hasattr(common, "ImageRows")
    from mtpg_aiaa.engine.tasks.aesnet.data import table_image_dataset

    table = pd.DataFrame({"image": ["a.png"], "score": [7.0]})
    rows = table_image_dataset(table, ".", lambda image: image, score_scale=(1.0, 10.0))
    assert isinstance(rows, AestheticsDataset) and rows.targets == [(7.0 - 1.0) / 9.0]
