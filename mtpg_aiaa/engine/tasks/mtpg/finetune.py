"""Stage 2: fusion + aesthetic-level prompt learning on scored, described images.

With a frozen backbone the task can train on cached features (``stage.feature_cache``,
``mtpg_aiaa/models/mtpg/feature_cache.py``, docs/feature_cache.md): the same losses, computed from
``model.score_features`` instead of images.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Subset

from ....data import AestheticsDataset, collate_samples, read_score_table
from mtpg_aiaa.eval.predict import predict
from ....errors import SettingError
from mtpg_aiaa.models.mtpg.feature_cache import (
    BuildReport,
    CachedFeatureDataset,
    FeatureCache,
    collate_features,
    predict_features,
    trainable_encode_parameters,
)
from mtpg_aiaa.models.mtpg.feature_table import DeviceFeatureTable, fits_on_device
from ....models.mtpg.losses import score_losses
from mtpg_aiaa.eval.metrics import compute_metrics
from ...checkpointing import unwrap
from ...distributed import barrier, current, gather_with_grad
from ...seeding import PerSampleSeeded
from ...trainer import resolve_autocast
from .standardization import fit_statistics_standardization, sample_rows

log = logging.getLogger(__name__)
CACHE_SWITCHES = {"auto": "auto", True: True, "true": True, False: False, "false": False}


@dataclass
class FeatureCacheOptions:
    """``stage.feature_cache``: ``enabled`` is ``auto`` (on exactly when no trainable
    parameter reaches ``encode``), ``true`` (on; an error if one does) or ``false``;
    ``dir`` the cache root; ``dtype`` ``float32`` (exact) or ``float16`` (half the disk);
    ``on_device`` ``auto`` (on a GPU, when the features have a fixed size), ``true`` or
    ``false``: serve the training split from a ``DeviceFeatureTable`` on the model's device;
    ``num_workers`` the DataLoader workers that serve cached features to training and
    validation (``None``: ``trainer.num_workers``). 0 reads them in the training process:
    on a CPU-bound host that is cheaper than a worker's hand-over, one socket round trip
    per tensor (docs/feature_cache.md); the batches are the same either way."""

    enabled: str | bool = "auto"
    dir: str = "outputs/feature_cache"
    dtype: str = "float32"
    on_device: str | bool = "auto"
    num_workers: int | None = None


def resolve_feature_cache(enabled: str | bool, model: nn.Module) -> bool:
    """Whether to train on cached features; ``enabled=true`` with a trainable backbone raises."""
    if enabled not in CACHE_SWITCHES:
        raise SettingError(f"stage.feature_cache.enabled must be auto, true or false; got {enabled!r}")
    switch = CACHE_SWITCHES[enabled]
    if switch is False:
        return False
    trainable = trainable_encode_parameters(model)
    if trainable and switch is True:
        shown = ", ".join(trainable[:3]) + (f" and {len(trainable) - 3} more" if len(trainable) > 3 else "")
        raise SettingError(
            f"stage.feature_cache.enabled=true needs a frozen backbone, but {shown} train and change the "
            "features every step. Set model.freeze=frozen, or stage.feature_cache.enabled=auto|false."
        )
    return not trainable


def _hold_on_device(switch: str | bool, dataset, device: torch.device) -> bool:
    """``stage.feature_cache.on_device``: whether to serve ``dataset`` from the device."""
    if switch not in CACHE_SWITCHES:
        raise ValueError(f"stage.feature_cache.on_device must be auto, true or false; got {switch!r}")
    switch = CACHE_SWITCHES[switch]
    fits = fits_on_device(dataset)
    if switch is True and not fits:
        raise ValueError("stage.feature_cache.on_device=true needs fixed-size features (fusion=official or none); "
                         "fusion=token caches per-token features of varying length")  # fmt: skip
    return fits if switch is True else (switch == "auto" and fits and device.type == "cuda")


class FinetuneTask:
    """Training batches -> weighted score losses; validation -> ``val/srcc`` etc.

    Args:
        model: the MTPG-AIAA model (its tokenizer, preprocessing and image size are used).
        train_table / val_table: tables from ``read_score_table``.
        loss_weights: e.g. ``{"fidelity": 1.0, "emd": 0.5}`` (see ``losses.score_losses``).
        augment: random augmentation of training images (uncached path only); false
            trains on the deterministic eval view, as the cached path does.
        feature_cache: when and where to cache frozen-backbone features (None: never).
            With the cache on, both splits are served as features, built here if missing,
            and ``cached`` is True.
        precision: the trainer's precision; cached features are computed under the same
            autocast as the uncached path would run the backbone.
    """

    def __init__(self, model: nn.Module, train_table: pd.DataFrame, val_table: pd.DataFrame | None,
                 image_root: str, loss_weights: dict[str, float], level_sigma: float = 0.1,
                 fidelity_temperature: float = 0.05,
                 eval_batch_size: int = 16, num_workers: int = 4, seed: int = 0,
                 on_bad_image: str = "error", max_pixels: int | None = None, score_scale: float = 10.0,
                 augment: bool = True, feature_cache: FeatureCacheOptions | None = None,
                 precision: str = "fp32", progress: bool = True):  # fmt: skip
        base = unwrap(model)
        common = {"tokenize": base.tokenizer, "on_bad_image": on_bad_image}
        if max_pixels:
            common["max_pixels"] = max_pixels
        self.loss_weights, self.level_sigma = dict(loss_weights), level_sigma
        self.fidelity_temperature = fidelity_temperature
        self.eval_batch_size, self.num_workers, self.score_scale = eval_batch_size, num_workers, score_scale
        options = feature_cache or FeatureCacheOptions(enabled=False)
        self.cached = resolve_feature_cache(options.enabled, base)
        # The trainer's DataLoader workers for the training split (None: trainer.num_workers).
        self.train_loader_workers = options.num_workers if self.cached else None
        self.cache_reports: dict[str, BuildReport] = {}
        if self.cached:
            if augment:
                log.info("feature cache on: training images use the deterministic eval transform (no augmentation); "
                         "stage.feature_cache.enabled=false trains on augmented views")  # fmt: skip
            device = next(base.parameters()).device
            cache = FeatureCache(options.dir, base, options.dtype, resolve_autocast(precision, device))
            datasets = [AestheticsDataset(table, image_root, cache.transform, **common) if _rows(table) else None
                        for table in (train_table, val_table)]  # fmt: skip
            self.train_dataset, self.val_dataset = (
                self._cached_split(cache, split, source, progress) if source is not None else None
                for split, source in zip(("train", "val"), datasets)
            )
            if self.train_dataset is not None and _hold_on_device(options.on_device, self.train_dataset, device):
                start = time.perf_counter()
                self.train_dataset = DeviceFeatureTable.from_dataset(self.train_dataset, device)
                log.info("feature cache: %d training rows held on %s (%.1f s to load)",
                         len(self.train_dataset), device, time.perf_counter() - start)  # fmt: skip
        else:
            train = AestheticsDataset(train_table, image_root, base.build_transform(train=augment), **common)
            self.train_dataset = PerSampleSeeded(train, seed)
            self.val_dataset = (
                AestheticsDataset(val_table, image_root, base.build_transform(), **common)
                if _rows(val_table) else None
            )  # fmt: skip
        self.seed = seed
        self._fit_statistics_standardization(base, train_table, image_root, common)

    def _fit_statistics_standardization(self, base: nn.Module, train_table: pd.DataFrame, image_root: str,
                                        common: dict, max_samples: int = 4096) -> None:  # fmt: skip
        """Fit the standardisation of every multi-level statistic ``fusion=token`` reads
        (``StandardizedProjection``) on the training split (eval view), once: a model that
        arrives fitted keeps its own. Larger splits give a random sample of ``max_samples``
        rows drawn with the run's seed (``standardization.sample_rows``), not the table's first rows,
        whose order may follow the source (a sorted or class-grouped CSV)."""
        unfitted = [key for key in base.statistics_keys() if not bool(base.fusion.statistics[key].fitted)]
        if not unfitted:
            return
        # The cached split may be shorter than the table (unreadable images are skipped).
        rows = sample_rows(len(self.train_dataset if self.cached else train_table), max_samples, self.seed)
        if self.cached:
            loader = DataLoader(Subset(self.train_dataset, rows),
                                batch_size=self.eval_batch_size, collate_fn=collate_features)  # fmt: skip
            values = {key: [batch["features"][key] for batch in loader] for key in unfitted}
        else:
            source = AestheticsDataset(train_table.iloc[rows], image_root, base.build_transform(), **common)
            used = fit_statistics_standardization(base, source, unfitted, self.eval_batch_size, self.num_workers)
            log.info("fitted the standardisation of %s on %d training images", ", ".join(unfitted), used)
            return
        for key in unfitted:
            statistics = base.fusion.statistics[key]
            statistics.fit(torch.cat(values[key]).to(statistics.mean.device))
            log.info("fitted the standardisation of %s on %d training samples", key, sum(len(v) for v in values[key]))

    def _cached_split(self, cache: FeatureCache, split: str, source: AestheticsDataset,
                      progress: bool) -> CachedFeatureDataset:  # fmt: skip
        """Build the missing entries of one split, log reuse, and serve the split from the cache."""
        # Every rank builds its share of the missing entries, then all read the whole split.
        context = current()
        report = cache.build(source, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                             rank=context.rank, world_size=context.world_size, progress=progress and context.is_main)  # fmt: skip
        barrier()
        self.cache_reports[split] = report
        skipped = f", {len(report.skipped)} unreadable images skipped" if report.skipped else ""
        log.info("feature cache %s (%s): %d entries reused, %d built in %.1f s%s",
                 cache.key_dir, split, report.reused, report.built, report.seconds, skipped)  # fmt: skip
        return cache.dataset(source, report.keys)

    def collate(self, samples: list | dict) -> dict:
        if isinstance(samples, dict):  # DeviceFeatureTable.__getitems__ made the batch already
            return samples
        return collate_features(samples) if self.cached else collate_samples(samples)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        if self.cached:
            features = {name: value.to(device, non_blocking=True) for name, value in batch["features"].items()}
            outputs = model.score_features(features)
        else:
            images = batch["image"].to(device, non_blocking=True)
            tokens = batch["description_tokens"].to(device, non_blocking=True)
            outputs = model({"image": images, "description_tokens": tokens})
        # The losses see the global batch (all ranks' samples): the pairwise fidelity loss
        # compares across ranks, and the step equals one process on the whole batch.
        outputs = {name: gather_with_grad(outputs[name]) for name in ("score", "probs", "logits")}
        target = gather_with_grad(batch["target"].to(device).float())
        return score_losses(outputs, target, self.loss_weights, self.level_sigma, self.fidelity_temperature)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        collate = collate_features if self.cached else collate_samples
        workers = self.num_workers if self.train_loader_workers is None else self.train_loader_workers
        loader = DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                            num_workers=workers, collate_fn=collate)  # fmt: skip
        if self.cached:
            table = predict_features(unwrap(model), loader, device)
        else:
            table = predict(unwrap(model), loader, device, progress=False).table
        return validation_metrics(table)


def validation_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``val/srcc``, ``val/plcc`` etc. of a prediction table (columns ``pred``, ``target`` on 0-1)."""
    metrics = compute_metrics(table["pred_0_1"].to_numpy(), table["target"].to_numpy(), threshold=0.5, n_bootstrap=0)
    return {f"val/{k}": float(v) for k, v in metrics.items()}


def _rows(table: pd.DataFrame | None) -> int:
    return 0 if table is None else len(table)


def read_split_tables(data: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The training and (optional) validation tables named by a ``data`` config group."""
    if not data.train_csv:
        raise SettingError("data.train_csv is not set: pick a data group (data=baid data.root=...) or set data.train_csv")

    def table(csv):
        return read_score_table(csv, descriptions_csv=data.descriptions_csv, score_scale=data.score_scale,
                                description_column=data.description_column,
                                max_description_chars=data.max_description_chars,
                                allow_paths_outside_root=data.get("allow_paths_outside_root", False))  # fmt: skip

    return table(data.train_csv), (table(data.val_csv) if data.val_csv else None)


def build_finetune_task(model: nn.Module, data: DictConfig, losses: Mapping[str, float], level_sigma: float = 0.1,
                        fidelity_temperature: float = 0.05, augment: bool = True,
                        feature_cache: Mapping | None = None, eval_batch_size: int = 16, num_workers: int = 4,
                        seed: int = 0, precision: str = "fp32", progress: bool = True) -> FinetuneTask:  # fmt: skip
    """Stage 2's task (``task=mtpg/finetune``, i.e. ``stage=finetune``; ``configs/task/mtpg/finetune.yaml``
    passes the ``stage`` settings, the ``data`` group and the trainer keys it reads)."""
    train_table, val_table = read_split_tables(data)
    return FinetuneTask(
        model, train_table, val_table, data.image_root,
        loss_weights=dict(losses), level_sigma=level_sigma, fidelity_temperature=fidelity_temperature,
        eval_batch_size=eval_batch_size, num_workers=num_workers, seed=seed,
        on_bad_image=data.on_bad_image, max_pixels=data.max_pixels, score_scale=data.score_scale,
        augment=augment, feature_cache=FeatureCacheOptions(**feature_cache) if feature_cache is not None else None,
        precision=precision, progress=progress,
    )  # fmt: skip
