"""Stage 1: manipulated samples, the four pretraining losses, real steps, resume, handing over to stage 2."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from helpers import compose_config, load_script, tiny_train_overrides, train_preempted
from mtpg_aiaa.data import BadInputError, collate_samples, read_score_table
from mtpg_aiaa.models.mtpg import manipulated
from mtpg_aiaa.models.mtpg.manipulated import ORIGINAL_ID, ManipulatedDataset, draw_view_ids
from mtpg_aiaa.engine.builders import build_training_model
from mtpg_aiaa.engine.checkpointing import load_training_state
from mtpg_aiaa.engine.seeding import PerSampleSeeded
from mtpg_aiaa.engine.tasks.mtpg.pretrain import pretrain_losses
from mtpg_aiaa.models.mtpg.manipulations import MANIPULATIONS, operation_groups
from mtpg_aiaa.transforms import IMAGENET_MEAN, IMAGENET_STD

train = load_script("train.py").train

ALL_WEIGHTS = {"matching": 1.0, "ordering": 1.0, "preference": 1.0, "contrastive": 1.0}
SIZE = 64  # dataset tests run the manipulations at 64 px: same code, a fraction of the time


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    return make_smoke(16, seed=2)


@pytest.fixture(scope="module")
def table(smoke) -> pd.DataFrame:
    return read_score_table(smoke["csv"])


def compose_run(smoke: dict, out: Path, *overrides: str):
    return compose_config("train", *tiny_train_overrides(smoke, out, *overrides))


def compose_pretrain(smoke: dict, out: Path, *overrides: str):
    return compose_run(smoke, out, "stage=pretrain", "stage.val_matching_images=4", *overrides)


@pytest.fixture(scope="module")
def pretrained_run(smoke, tmp_path_factory) -> tuple[Path, dict]:
    """Two real optimizer steps of ``stage=pretrain``; the run dir and its final metrics."""
    out = tmp_path_factory.mktemp("pretrain")
    metrics = train(compose_pretrain(smoke, out))
    return out / "train" / "run", metrics


# -- training through train(cfg) --------------------------------------------------------
def test_two_pretrain_steps_write_last_pt_with_finite_loss_terms(smoke, pretrained_run):
    run, metrics = pretrained_run
    state = load_training_state(run / "last.pt")
    assert state["step"] == 2 and state["config"]["stage"]["name"] == "pretrain"
    history = pd.read_csv(run / "metrics.csv")
    train_rows = history.dropna(subset=["train/loss"])
    assert len(train_rows) == 2
    for term in ("loss", *ALL_WEIGHTS):
        assert np.isfinite(train_rows[f"train/{term}"]).all(), term
    assert {"val/srcc", "val/plcc", "val/matching_accuracy", "val/preference_accuracy"} <= set(metrics)
    # The reported figure is the final weights' accuracy on the fixed views, counted here by hand.
    cfg = compose_pretrain(smoke, run.parents[1])
    model = build_training_model(cfg.model)
    model.load_state_dict(state["model"])
    task = instantiate(cfg.task, model=model)
    assert metrics["val/matching_accuracy"] == pytest.approx(matching_accuracy_by_hand(model, task))


def test_finetune_init_from_a_pretrain_run_loads_its_backbone(smoke, pretrained_run, tmp_path):
    run, _ = pretrained_run
    cfg = compose_run(smoke, tmp_path, "stage=finetune", f"init_from={run}")
    model = build_training_model(cfg.model, cfg.init_from)  # what train() does for stage 2
    pretrained = load_training_state(run / "last.pt")["model"]
    loaded = model.state_dict()
    backbone_keys = [key for key in pretrained if key.startswith("backbone.")]
    assert backbone_keys
    for key in backbone_keys:
        assert torch.equal(loaded[key], pretrained[key]), key


def test_pretrain_resume_continues_exactly(smoke, tmp_path, monkeypatch):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(compose_pretrain(smoke, straight, "trainer.max_steps=4"))
    train_preempted(train, compose_pretrain(smoke, resumed, "trainer.max_steps=4"), monkeypatch)
    train(compose_pretrain(smoke, resumed, "trainer.max_steps=4", "resume=auto"))
    a = load_training_state(straight / "train" / "run" / "last.pt")
    b = load_training_state(resumed / "train" / "run" / "last.pt")
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def matching_accuracy_by_hand(model, task) -> float:
    """Top-1 of each fixed validation view among the 30 manipulation prompts, one view at a time."""
    model.eval()
    with torch.no_grad():
        prompts = model.encode_texts(task.prompt_tokens)
        hits = views = 0
        for i in range(len(task.matching_dataset)):
            sample = task.matching_dataset[i]
            for view, label in zip(sample["views"], sample["labels"].tolist()):
                image = model.encode_image_side(view[None])["image"]
                hits += int((image @ prompts.T).argmax()) == label
                views += 1
    return hits / views


def test_validation_matching_views_are_fixed_and_counted_per_view(smoke, tmp_path):
    cfg = compose_pretrain(smoke, tmp_path)
    torch.manual_seed(0)
    model = build_training_model(cfg.model)
    task = instantiate(cfg.task, model=model)
    first = task.matching_dataset[1]
    assert torch.equal(first["views"], task.matching_dataset[1]["views"])  # the same views on every call
    by_hand = matching_accuracy_by_hand(model, task)
    # The metric batches views view-major across paintings; counted one view at a time here.
    assert task.matching_metrics(model, torch.device("cpu"))["val/matching_accuracy"] == pytest.approx(by_hand)


# -- the dataset ------------------------------------------------------------------------
def test_sample_layout(smoke, table):
    dataset = ManipulatedDataset(table, smoke["image_root"], image_size=SIZE, tokenize=lambda texts: torch.zeros(1, 8))
    samples = [PerSampleSeeded(dataset, seed=0)[i] for i in range(6)]
    for sample in samples:
        assert sample["views"].shape == (4, 3, SIZE, SIZE) and sample["views"].dtype == torch.float32
        labels, strengths = sample["labels"].tolist(), sample["strengths"].tolist()
        assert labels[0] == ORIGINAL_ID and strengths[0] == -1 and ORIGINAL_ID not in labels[1:]
        if sample["ordered"]:
            group = MANIPULATIONS[labels[1]].operation
            assert labels[1:] == operation_groups()[group] and strengths == [-1, 0, 1, 2]
        assert sample["has_description"] and sample["description_tokens"].shape == (8,)
    assert any(sample["ordered"] for sample in samples)
    sample = samples[0]
    # The original view is the crop normalised with ImageNet statistics (preprocess=official).
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = sample["views"][0] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    batch = collate_samples(samples[:2])
    assert batch["views"].shape == (2, 4, 3, SIZE, SIZE) and batch["labels"].shape == (2, 4)


def test_view_ids_cover_every_operation_and_rotation_is_unordered():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        ids, ordered = draw_view_ids(rng)
        seen.update(ids)
        operations = [MANIPULATIONS[i].operation for i in ids]
        if operations[0] == "rotation":
            assert ids[:2] == [27, 28] and not ordered
            assert MANIPULATIONS[ids[2]].operation not in ("rotation", "none")
        else:
            assert ordered and len(set(operations)) == 1
            assert [MANIPULATIONS[i].strength for i in ids] == [0, 1, 2]
    assert seen == set(range(29))


def test_samples_are_determined_by_seed_epoch_and_index(smoke, table):
    dataset = PerSampleSeeded(ManipulatedDataset(table, smoke["image_root"], image_size=SIZE), seed=5)
    first, again = dataset[3], dataset[3]
    for key in ("views", "labels", "strengths", "ordered"):
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["views"], dataset[4]["views"])
    dataset.set_epoch(1)
    assert not torch.equal(first["views"], dataset[3]["views"])


def test_cutmix_pastes_from_another_training_image(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "img" / "black.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 255, np.uint8)).save(tmp_path / "img" / "white.png")
    csv_path = _write_csv(tmp_path / "labels.csv", ["black.png", "white.png"])
    monkeypatch.setattr(manipulated, "draw_view_ids", lambda rng: (operation_groups()["cutmix"], True))
    dataset = PerSampleSeeded(ManipulatedDataset(read_score_table(csv_path), tmp_path / "img", image_size=SIZE), 0)
    views = dataset[0]["views"]  # black painting, patches from the white one
    white_pixels = [(view.mean(dim=0) > 0).sum().item() for view in views]
    assert white_pixels[0] == 0 and 0 < white_pixels[1] < white_pixels[2] < white_pixels[3]


def test_bad_image_errors_naming_the_file_or_is_skipped(smoke, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    Image.open(Path(smoke["image_root"]) / "0000.jpg").save(tmp_path / "img" / "good.jpg")
    table = read_score_table(_write_csv(tmp_path / "labels.csv", ["good.jpg", "broken.jpg"]))
    with pytest.raises(BadInputError, match=r"broken\.jpg.*table row 1"):
        ManipulatedDataset(table, tmp_path / "img", image_size=SIZE)[1]
    skipped = ManipulatedDataset(table, tmp_path / "img", image_size=SIZE, on_bad_image="skip")[1]
    assert skipped["skipped"] and skipped["image_name"] == "broken.jpg" and "broken.jpg" in skipped["reason"]


# -- the losses -------------------------------------------------------------------------
def _views(batch_size: int = 3, dim: int = 8, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(4, batch_size, dim, generator=generator), dim=-1)
    return {
        "image": image, "labels": torch.tensor([[29], [0], [1], [2]]).expand(4, batch_size),
        "ordered": torch.ones(batch_size, dtype=torch.bool), "logit_scale": torch.tensor(math.log(10.0)),
        "prompt_features": F.normalize(torch.randn(30, dim, generator=generator), dim=-1),
    }  # fmt: skip


def test_preference_is_zero_when_the_original_scores_far_above_and_positive_otherwise():
    inputs = _views()
    high = torch.tensor([[0.9] * 3, [0.1] * 3, [0.2] * 3, [0.1] * 3])
    below = torch.tensor([[0.4] * 3, [0.1] * 3, [0.2] * 3, [0.6] * 3])
    weights = {"preference": 1.0}
    assert pretrain_losses(**inputs, weights=weights, scores=high)["preference"] == 0
    assert pretrain_losses(**inputs, weights=weights, scores=below)["preference"] > 0


def test_ordering_penalises_only_ordered_samples_out_of_order():
    inputs = _views(batch_size=1, dim=2)
    angles = torch.tensor([0.0, 0.3, 0.8, 1.4])  # distance from the original grows with strength
    in_order = torch.stack([angles.cos(), angles.sin()], dim=-1)[:, None, :]
    reversed_ = in_order[[0, 3, 2, 1]]
    weights = {"ordering": 1.0}
    assert pretrain_losses(**{**inputs, "image": in_order}, weights=weights)["ordering"] == 0
    assert pretrain_losses(**{**inputs, "image": reversed_}, weights=weights)["ordering"] > 0
    unordered = {**inputs, "image": reversed_, "ordered": torch.zeros(1, dtype=torch.bool)}
    assert pretrain_losses(**unordered, weights=weights)["ordering"] == 0  # e.g. rotation samples


def test_matching_is_low_when_views_look_like_their_prompts():
    inputs = _views()
    matching_images = inputs["prompt_features"][inputs["labels"]]  # [4, B, D]
    weights = {"matching": 1.0}
    low = pretrain_losses(**{**inputs, "image": matching_images}, weights=weights)["matching"]
    assert low < pretrain_losses(**inputs, weights=weights)["matching"]


def test_contrastive_is_zero_not_nan_without_two_descriptions_and_responds_otherwise():
    inputs = _views()
    image = inputs["image"].clone().requires_grad_(True)
    text = inputs["image"][0].detach()
    weights = {"contrastive": 1.0}
    for described in ([False, False, False], [True, False, False]):
        losses = pretrain_losses(**{**inputs, "image": image}, weights=weights, text=text,
                                 described=torch.tensor(described))  # fmt: skip
        assert losses["contrastive"] == 0 and torch.isfinite(losses["loss"])
        losses["loss"].backward()  # still a graph: a batch without descriptions trains on
    everyone = torch.ones(3, dtype=torch.bool)
    aligned = pretrain_losses(**inputs, weights=weights, text=text, described=everyone)["contrastive"]
    shuffled = pretrain_losses(**inputs, weights=weights, text=text[[1, 2, 0]], described=everyone)["contrastive"]
    assert 0 < aligned < shuffled


def test_a_training_step_without_descriptions_has_a_zero_contrastive_term(smoke, table, tmp_path):
    blank = table.head(4).assign(description="")
    cfg = compose_pretrain(smoke, tmp_path)
    model = build_training_model(cfg.model)
    task = instantiate(cfg.task, model=model)
    dataset = ManipulatedDataset(blank, smoke["image_root"], image_size=224, tokenize=model.tokenizer)
    batch = task.collate([PerSampleSeeded(dataset, 0)[i] for i in range(4)])
    losses = task.training_step(model, batch, torch.device("cpu"))
    assert losses["contrastive"] == 0 and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()


def test_unknown_or_all_zero_weights_are_errors():
    with pytest.raises(ValueError, match="unknown stage-1 loss"):
        pretrain_losses(**_views(), weights={"matchng": 1.0})
    with pytest.raises(ValueError, match="every stage-1 loss weight"):
        pretrain_losses(**_views(), weights={"matching": 0.0})


def _write_csv(path: Path, names: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "score"])
        writer.writerows([name, 5.0] for name in names)
    return path
