"""Frozen-backbone feature cache: same losses as the uncached path, keys, reuse, resume, errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import compose_config, load_script
from mtpg_aiaa.data import AestheticsDataset, read_score_table
from mtpg_aiaa.engine.freezing import apply_freeze_policy
from mtpg_aiaa.engine.tasks.mtpg.finetune import FeatureCacheOptions, FinetuneTask
from mtpg_aiaa.models.mtpg.feature_cache import FeatureCache, FeatureCacheError
from mtpg_aiaa.models.mtpg.model import MTPGConfig, build_mtpg

train_module = load_script("train.py")
make_image = load_script("scripts/make_smoke_data.py").make_image
write_smoke_data = load_script("scripts/make_smoke_data.py").write_smoke_data

CPU = torch.device("cpu")
ALL_LOSSES = {"fidelity": 1.0, "emd": 0.5, "ce": 0.5, "mse": 1.0}


@pytest.fixture(scope="module")
def smoke(make_smoke) -> dict:
    """Eight generated images; the fixture is shared, so tests that touch files make their own."""
    return make_smoke(8, seed=3)


def tiny_model(fusion: str = "token", freeze: str = "frozen") -> torch.nn.Module:
    """``fusion``: official, token, none, or token+layers (multi-level statistics of the image
    and of the description)."""
    torch.manual_seed(0)
    layers = fusion == "token+layers"
    extra = ({"fusion": {"num_heads": 4, "layer_statistics": layers, "description_statistics": layers}}
             if fusion.startswith("token") else {})  # fmt: skip
    model = build_mtpg(MTPGConfig(backbone="LongCLIP-tiny", fusion=fusion.split("+")[0], prompts="clean", extra=extra))
    apply_freeze_policy(model.backbone, freeze)
    return model


def score_table(smoke: dict):
    """The smoke labels with descriptions of different lengths, so token padding matters."""
    table = read_score_table(smoke["csv"])
    table["description"] = [text + " Bold strokes." * (i % 3) for i, text in enumerate(table["description"])]
    return table


def make_task(model, smoke: dict, cache_dir: Path | None = None, enabled="true") -> FinetuneTask:
    table = score_table(smoke)
    options = FeatureCacheOptions(enabled=enabled, dir=str(cache_dir)) if cache_dir else None
    return FinetuneTask(model, table, table, smoke["image_root"], ALL_LOSSES, eval_batch_size=4, num_workers=0,
                        augment=False, feature_cache=options, progress=False)  # fmt: skip


def source_dataset(cache: FeatureCache, smoke: dict, table=None) -> AestheticsDataset:
    table = score_table(smoke) if table is None else table
    return AestheticsDataset(table, smoke["image_root"], cache.transform, tokenize=cache.model.tokenizer)


def step(task: FinetuneTask, model, rows: list[int]) -> tuple[dict, dict]:
    """Losses and head gradients of one training batch made of ``rows``."""
    model.zero_grad(set_to_none=True)
    batch = task.collate([task.train_dataset[i] for i in rows])
    losses = task.training_step(model, batch, CPU)
    losses["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return losses, grads


@pytest.mark.parametrize("fusion", ["official", "token", "token+layers", "none"])
def test_cached_batch_gives_the_uncached_losses_gradients_and_metrics(smoke, tmp_path, fusion):
    model = tiny_model(fusion)
    plain, cached = make_task(model, smoke), make_task(model, smoke, tmp_path)
    assert cached.cached and not plain.cached
    rows = [5, 0, 7, 2, 4]  # not the build's batches, and descriptions of three lengths
    (plain_losses, plain_grads), (cached_losses, cached_grads) = step(plain, model, rows), step(cached, model, rows)
    assert plain_losses.keys() == cached_losses.keys()
    for name in plain_losses:
        torch.testing.assert_close(cached_losses[name], plain_losses[name], rtol=1e-6, atol=1e-6)
    assert plain_grads and plain_grads.keys() == cached_grads.keys()
    assert not any(name.startswith("backbone.") for name in plain_grads)
    for name in plain_grads:
        torch.testing.assert_close(cached_grads[name], plain_grads[name], rtol=1e-6, atol=1e-6)
    plain_metrics, cached_metrics = plain.validate(model, CPU), cached.validate(model, CPU)
    assert plain_metrics.keys() == cached_metrics.keys() and "val/srcc" in cached_metrics
    for name in plain_metrics:
        assert cached_metrics[name] == pytest.approx(plain_metrics[name], abs=1e-6), name


def test_statistics_standardisation_is_fitted_alike_from_images_and_cache(smoke, tmp_path):
    plain_model, cached_model = tiny_model("token+layers"), tiny_model("token+layers")
    keys = ("image_layer_statistics", "text_layer_statistics")
    assert plain_model.statistics_keys() == keys
    assert not any(plain_model.fusion.statistics[key].fitted for key in keys)
    make_task(plain_model, smoke)
    make_task(cached_model, smoke, tmp_path)
    for key in keys:
        plain, cached = plain_model.fusion.statistics[key], cached_model.fusion.statistics[key]
        assert plain.fitted and cached.fitted and not torch.allclose(plain.scale, torch.ones(1))
        torch.testing.assert_close(cached.mean, plain.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cached.scale, plain.scale, rtol=1e-5, atol=1e-6)
    image_statistics = plain_model.fusion.statistics["image_layer_statistics"]
    fitted = image_statistics.mean.clone()
    with torch.no_grad():
        image_statistics.mean.add_(1.0)  # as if fitted elsewhere (init_from a stage-2 run)
    make_task(plain_model, smoke)  # a fitted model keeps its own standardisation
    assert torch.equal(image_statistics.mean, fitted + 1.0)


def test_entries_are_reused_until_weights_preprocessing_files_or_descriptions_change(tmp_path):
    smoke = write_smoke_data(tmp_path / "data", num_images=6, seed=4)
    model = tiny_model("token")
    cache = FeatureCache(tmp_path / "cache", model)
    source = source_dataset(cache, smoke)
    first = cache.build(source, batch_size=4, progress=False)
    assert (first.built, first.reused) == (6, 0)
    assert (cache.key_dir / "features.json").is_file()
    again = FeatureCache(tmp_path / "cache", model)
    assert again.key_dir == cache.key_dir
    assert (again.build(source, progress=False).built, again.build(source, progress=False).reused) == (0, 6)

    table = score_table(smoke)
    table.loc[0, "description"] = "A different description."
    assert cache.build(source_dataset(cache, smoke, table), progress=False).built == 1

    image = smoke["image_root"] / "0001.jpg"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touch
    assert cache.build(source, progress=False).built == 1
    make_image(np.random.default_rng(99)).save(smoke["image_root"] / "0002.jpg")  # rewrite
    report = cache.build(source, progress=False)
    assert (report.built, report.reused) == (1, 5)

    model.config.preprocess = "clip"
    assert FeatureCache(tmp_path / "cache", model).key_dir != cache.key_dir
    model.config.preprocess = "official"
    assert FeatureCache(tmp_path / "cache", model, dtype="float16").key_dir != cache.key_dir
    with torch.no_grad():
        model.backbone.ln_final.weight.add_(1e-3)
    changed = FeatureCache(tmp_path / "cache", model)
    assert changed.key_dir != cache.key_dir
    assert changed.build(source_dataset(changed, smoke), progress=False).built == 6


def test_an_interrupted_build_resumes_with_identical_features(smoke, tmp_path, monkeypatch):
    model = tiny_model("token")
    clean = FeatureCache(tmp_path / "clean", model)
    clean.build(source_dataset(clean, smoke), batch_size=3, progress=False)

    cache = FeatureCache(tmp_path / "crash", model)
    source, encode, calls = source_dataset(cache, smoke), model.encode, []

    def power_cut_on_second_batch(images, tokens):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return encode(images, tokens)

    monkeypatch.setattr(model, "encode", power_cut_on_second_batch)
    with pytest.raises(RuntimeError, match="power cut"):
        cache.build(source, batch_size=3, progress=False)
    assert len(list(cache.key_dir.glob("*/*.safetensors"))) == 3  # the first batch survived
    monkeypatch.undo()
    report = cache.build(source, batch_size=3, progress=False)
    assert (report.built, report.reused) == (5, 3)
    assert not list(cache.key_dir.rglob("*.tmp"))
    for key in report.keys:
        resumed, reference = cache.read_entry(key), clean.read_entry(key)
        assert resumed.keys() == reference.keys()
        for name in reference:
            assert torch.equal(resumed[name], reference[name]), name


def test_ranks_build_disjoint_shares_that_cover_every_entry(smoke, tmp_path):
    cache = FeatureCache(tmp_path, tiny_model("none"))
    source = source_dataset(cache, smoke)
    reports = [cache.build(source, rank=rank, world_size=3, progress=False) for rank in (2, 0, 1)]
    assert [r.built for r in reports] == [2, 3, 3]  # 8 entries: ranks 0 and 1 own 3, rank 2 owns 2
    assert len(list(cache.key_dir.glob("*/*.safetensors"))) == 8
    assert cache.build(source, progress=False).reused == 8


def test_a_corrupt_entry_names_the_file_and_the_fix(smoke, tmp_path):
    model = tiny_model("official")
    cache = FeatureCache(tmp_path, model)
    source = source_dataset(cache, smoke)
    report = cache.build(source, progress=False)
    broken = cache.entry_path(report.keys[3])
    broken.write_bytes(b"not a safetensors file")
    dataset = cache.dataset(source, report.keys)
    with pytest.raises(FeatureCacheError, match=rf"{broken.name} is unreadable.*rm "):
        dataset[3]
    broken.unlink()
    assert cache.build(source, progress=False).built == 1
    assert dataset[3]["features"]["image"].shape == (64,)


def test_cache_switch_follows_the_freeze_policy(smoke, tmp_path):
    trainable = tiny_model("token", freeze="full")
    with pytest.raises(ValueError, match=r"enabled=true needs a frozen backbone.*backbone\..*model\.freeze=frozen"):
        make_task(trainable, smoke, tmp_path, enabled=True)
    assert not make_task(trainable, smoke, tmp_path, enabled="auto").cached
    assert not make_task(tiny_model("token"), smoke, tmp_path, enabled=False).cached
    assert not list(tmp_path.iterdir())  # nothing was cached


def test_training_with_a_frozen_backbone_runs_on_cached_features(smoke, tmp_path, monkeypatch):
    tasks = []

    def recording_builder(cfg, model, context=None):
        tasks.append(build_task(cfg, model, context))
        return tasks[-1]

    build_task = train_module.build_task
    monkeypatch.setattr(train_module, "build_task", recording_builder)
    cfg = compose_config(
        "train", "model=tiny", "model.freeze=frozen", "data=csv", f"data.train_csv={smoke['csv']}",
        f"data.val_csv={smoke['csv']}", f"data.image_root={smoke['image_root']}", "debug=fast",
        "trainer.batch_size=4", "sched.warmup_steps=1", f"paths.output_root={tmp_path}", "run_name=run",
    )  # fmt: skip
    metrics = train_module.train(cfg)
    task = tasks[0]
    assert task.cached and "val/srcc" in metrics
    assert (task.cache_reports["train"].built, task.cache_reports["val"].reused) == (8, 8)  # val = train images
    assert len(list((tmp_path / "feature_cache").glob("tokens-*/*/*.safetensors"))) == 8
    assert (tmp_path / "train" / "run" / "last.pt").is_file()


def test_cache_key_changes_when_a_feature_changes_shape_under_the_same_name(tmp_path, monkeypatch):
    model = tiny_model("token+layers")
    before = FeatureCache(tmp_path, model).key_dir
    encode = model.backbone.encode_text_with_layer_statistics
    monkeypatch.setattr(model.backbone, "encode_text_with_layer_statistics",
                        lambda text: (lambda out: (out[0], out[1], out[2][:, :1]))(encode(text)))  # fmt: skip
    after = FeatureCache(tmp_path, model)
    assert "text_layer_statistics" in after.feature_shapes and after.key_dir != before
