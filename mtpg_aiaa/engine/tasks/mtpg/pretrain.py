"""Stage 1: self-supervised text-prompt pretraining on manipulated paintings.

Each sample is a painting and the mild, medium and strong versions of one manipulation
(``models.mtpg.manipulated.ManipulatedDataset``). One forward pass over all views feeds four
losses, weighted by ``stage.losses`` (docs/method.md, "Stage 1"):

- ``matching``: every view's image feature against the 30 manipulation prompts;
- ``ordering``: cosine distance from the original grows mild < medium < strong;
- ``preference``: the original's expected aesthetic score above each manipulation's;
- ``contrastive``: original images against their descriptions (InfoNCE).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ....data import AestheticsDataset, collate_samples
from mtpg_aiaa.models.mtpg.manipulated import NUM_VIEWS, ManipulatedDataset
from mtpg_aiaa.eval.predict import predict
from ....errors import SettingError
from ....models.mtpg.losses import contrastive_loss, preference_loss, prompt_matching_loss, strength_ordering_loss
from mtpg_aiaa.models.mtpg.manipulations import prompts
from ...checkpointing import unwrap
from ...distributed import gather_with_grad
from ...seeding import PerSampleSeeded
from .finetune import read_split_tables, validation_metrics
from .standardization import fit_statistics_standardization, sample_rows, unfitted_statistics

log = logging.getLogger(__name__)
PRETRAIN_LOSSES = ("matching", "ordering", "preference", "contrastive")


def pretrain_losses(
    image: torch.Tensor, labels: torch.Tensor, ordered: torch.Tensor, prompt_features: torch.Tensor,
    logit_scale: torch.Tensor, weights: dict[str, float], scores: torch.Tensor | None = None,
    text: torch.Tensor | None = None, described: torch.Tensor | None = None,
    ordering_margin: float = 0.05, preference_margin: float = 0.05,
) -> dict[str, torch.Tensor]:
    """The weighted stage-1 losses named in ``weights`` (a zero weight skips a term).

    Args:
        image: l2-normalised image features ``[V, B, D]``, view 0 the original.
        labels: manipulation id of each view ``[V, B]``.
        ordered: ``[B]`` bool, views 1-3 are mild, medium, strong of one operation.
        prompt_features: the 30 manipulation prompts' features ``[30, D]``, l2-normalised.
        logit_scale: the model's log temperature (a scalar).
        scores: expected aesthetic score of each view ``[V, B]`` (for ``preference``).
        text: description features of the originals ``[B, D]`` (for ``contrastive``).
        described: ``[B]`` bool, the sample has a non-blank description.

    Returns:
        ``loss`` (the weighted sum) and each computed term, detached. Terms with nothing
        to compare (no ordered sample, fewer than two described ones) are zero, not NaN.
    """
    check_loss_weights(weights)
    zero = image.sum() * 0.0  # keeps the graph, so a batch without a term still backpropagates
    terms: dict[str, torch.Tensor] = {}
    if weights.get("matching"):
        terms["matching"] = prompt_matching_loss(image.flatten(0, 1), prompt_features, labels.flatten(), logit_scale)
    if weights.get("ordering"):
        # Cosine distance of each manipulated view from its original: [B, 3].
        distances = 1.0 - (image[1:] * image[:1]).sum(dim=-1).T
        terms["ordering"] = strength_ordering_loss(distances[ordered], ordering_margin) if ordered.any() else zero
    if weights.get("preference"):
        if scores is None:
            raise ValueError("the preference loss needs the views' scores")
        terms["preference"] = preference_loss(scores[:1].expand_as(scores[1:]), scores[1:], preference_margin)
    if weights.get("contrastive"):
        if text is None or described is None:
            raise ValueError("the contrastive loss needs description features and the described mask")
        enough = int(described.sum()) >= 2  # InfoNCE needs a negative
        terms["contrastive"] = contrastive_loss(image[0][described], text[described], logit_scale) if enough else zero
    total = sum(weights[name] * value for name, value in terms.items())
    return {"loss": total, **{name: value.detach() for name, value in terms.items()}}


class PretrainTask:
    """Manipulated training views -> weighted stage-1 losses; validation -> zero-shot
    ``val/srcc`` etc. plus ``val/matching_accuracy`` and ``val/preference_accuracy``.

    Args:
        model: the MTPG-AIAA model (its tokenizer, preprocessing and image size are used).
        train_table / val_table: tables from ``read_score_table`` (training scores unused).
        loss_weights: e.g. ``{"matching": 1.0, "ordering": 1.0, ...}`` (see ``pretrain_losses``).
        val_matching_images: validation images whose manipulated views (fixed by ``seed``)
            measure prompt matching; 0 turns that measurement off.
        standardization_samples: training images (a seeded sample) the standardisation of
            the fusion's multi-level statistics is fitted on before the preference loss
            trains the fusion; an extra forward pass each, so fewer than stage 2's.
    """

    def __init__(self, model: nn.Module, train_table: pd.DataFrame, val_table: pd.DataFrame | None,
                 image_root: str, loss_weights: dict[str, float], ordering_margin: float = 0.05,
                 preference_margin: float = 0.05, val_matching_images: int = 256, eval_batch_size: int = 16,
                 num_workers: int = 4, seed: int = 0, on_bad_image: str = "error", max_pixels: int | None = None,
                 standardization_samples: int = 256):  # fmt: skip
        base = unwrap(model)
        preprocess, size = base.config.preprocess, base.backbone.arch.image_size
        common = {"tokenize": base.tokenizer, "on_bad_image": on_bad_image}
        if max_pixels:
            common["max_pixels"] = max_pixels
        self.loss_weights = {name: float(weight) for name, weight in loss_weights.items()}
        check_loss_weights(self.loss_weights)
        self.ordering_margin, self.preference_margin = ordering_margin, preference_margin
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers
        train_views = ManipulatedDataset(train_table, image_root, preprocess, size, **common)
        self.train_dataset = PerSampleSeeded(train_views, seed)
        self.score_dataset = self.matching_dataset = None
        if val_table is not None and len(val_table) > 0:
            self.score_dataset = AestheticsDataset(val_table, image_root, base.build_transform(), **common)
            if val_matching_images:
                views = ManipulatedDataset(val_table, image_root, preprocess, size, **common)
                self.matching_dataset = fixed_view_set(views, val_matching_images, seed)
        self.prompt_tokens = base.tokenizer(prompts())  # [30, context]
        # The preference loss trains the fusion: standardise the statistics it reads first,
        # so stage 2 inherits fusion weights together with the standardisation they learnt under.
        keys = unfitted_statistics(base) if self.loss_weights.get("preference") else []
        if keys:
            rows = sample_rows(len(train_table), standardization_samples, seed)
            source = AestheticsDataset(train_table.iloc[rows], image_root, base.build_transform(), **common)
            used = fit_statistics_standardization(base, source, keys, eval_batch_size, num_workers)
            log.info("fitted the standardisation of %s on %d training images", ", ".join(keys), used)

    def collate(self, samples: list) -> dict:
        return collate_samples(samples)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        # The model's own methods, not its forward: the losses need image features and
        # scores of the same pass. Under DDP the trainer wraps this whole step as the
        # module's forward (trainer.TaskStep), so gradients still synchronise.
        base = unwrap(model)
        views = batch["views"].to(device, non_blocking=True)  # [B, V, 3, S, S]
        tokens = batch["description_tokens"].to(device, non_blocking=True)  # [B, L]
        outputs = self._encode_views(base, views, tokens)
        prompt_features = base.encode_texts(self.prompt_tokens.to(device))  # with gradients when the text tower trains
        # Every loss sees the global batch (all ranks' samples): InfoNCE gets every
        # description as a negative, and the step equals one process on the whole batch.
        image = gather_with_grad(outputs["image"].transpose(0, 1)).transpose(0, 1)
        scores = gather_with_grad(outputs["score"].T).T if "score" in outputs else None
        text = gather_with_grad(outputs["text"]) if "text" in outputs else None
        return pretrain_losses(
            image, gather_with_grad(batch["labels"].to(device)).T, gather_with_grad(batch["ordered"].to(device)),
            prompt_features, base.logit_scale, self.loss_weights, scores=scores, text=text,
            described=gather_with_grad(batch["has_description"].to(device)),
            ordering_margin=self.ordering_margin, preference_margin=self.preference_margin,
        )  # fmt: skip

    def _encode_views(self, base: nn.Module, views: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of every view in one pass: ``image [V, B, D]``, and what the weighted
        losses need of ``score [V, B]`` (each view fused with its painting's description)
        and ``text [B, D]`` (the descriptions' features)."""
        batch_size, num_views = views.shape[:2]
        images = views.transpose(0, 1).flatten(0, 1)  # view-major [V*B, 3, S, S]
        outputs: dict[str, torch.Tensor] = {}
        if self.loss_weights.get("preference"):
            # Each description is encoded once and repeated for its painting's views.
            text_side = base.encode_text_side(tokens)
            features = base.encode_image_side(images) | {
                name: value.repeat(num_views, *([1] * (value.dim() - 1))) for name, value in text_side.items()
            }
            outputs["score"] = base.score_features(features)["score"].view(num_views, batch_size)
            image = features["image"]
            if "text" in features:
                outputs["text"] = features["text"][:batch_size]
        else:
            image = base.encode_images(images)
        outputs["image"] = image.view(num_views, batch_size, -1)
        if self.loss_weights.get("contrastive") and "text" not in outputs:
            outputs["text"] = base.encode_texts(tokens)
        return outputs

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        base = unwrap(model)
        metrics: dict[str, float] = {}
        if self.score_dataset is not None:
            metrics |= score_metrics(base, self.score_dataset, device, self.eval_batch_size, self.num_workers)
        if self.matching_dataset is not None:
            metrics |= self.matching_metrics(base, device)
        return metrics

    @torch.inference_mode()
    def matching_metrics(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """``val/matching_accuracy`` (top-1 among the 30 prompts, over all views) and
        ``val/preference_accuracy`` (original scored above its manipulation) on the
        fixed manipulated validation views."""
        model.eval()
        loader = DataLoader(self.matching_dataset, batch_size=max(1, self.eval_batch_size // NUM_VIEWS),
                            shuffle=False, num_workers=self.num_workers, collate_fn=collate_samples)  # fmt: skip
        prompt_features = model.encode_texts(self.prompt_tokens.to(device))
        matched = preferred = views = pairs = 0
        for batch in loader:
            if len(batch["index"]) == 0:
                continue
            images, tokens = batch["views"].to(device), batch["description_tokens"].to(device)
            num_views = images.shape[1]
            features = model.encode(images.transpose(0, 1).flatten(0, 1), tokens.repeat(num_views, 1))
            predicted = (features["image"] @ prompt_features.T).argmax(dim=-1).cpu()
            matched += int((predicted == batch["labels"].T.flatten()).sum())
            scores = model.score_features(features)["score"].view(num_views, -1)
            preferred += int((scores[0] > scores[1:]).sum())
            views, pairs = views + predicted.numel(), pairs + scores[1:].numel()
        if not views:
            return {}
        return {"val/matching_accuracy": matched / views, "val/preference_accuracy": preferred / pairs}


def check_loss_weights(weights: dict[str, float]) -> None:
    """Unknown loss names and all-zero weights are errors (the task checks at build time)."""
    unknown = set(weights) - set(PRETRAIN_LOSSES)
    if unknown:
        raise SettingError(f"unknown stage-1 loss(es) {sorted(unknown)} in stage.losses; choose from {PRETRAIN_LOSSES}")
    if not any(weights.values()):
        raise SettingError("every stage-1 loss weight in stage.losses is zero")


def fixed_view_set(dataset: ManipulatedDataset, max_images: int, seed: int) -> Dataset:
    """At most ``max_images`` rows of ``dataset`` (a seeded choice when there are more), each
    with the same views on every call: seeded by ``(seed, epoch 0, index)`` for good."""
    seeded = PerSampleSeeded(dataset, seed)
    if len(dataset) <= max_images:
        return seeded
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_images, replace=False))
    return Subset(seeded, rows.tolist())


def score_metrics(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                  num_workers: int) -> dict[str, float]:  # fmt: skip
    """``val/srcc``, ``val/plcc`` etc. of the model's level-prompt score, as stage 2 validates."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_samples)  # fmt: skip
    return validation_metrics(predict(model, loader, device, progress=False).table)


def build_pretrain_task(model: nn.Module, data: DictConfig, losses: Mapping[str, float], ordering_margin: float,
                        preference_margin: float, val_matching_images: int, standardization_samples: int,
                        eval_batch_size: int = 16, num_workers: int = 4, seed: int = 0) -> PretrainTask:  # fmt: skip
    """Stage 1's task (``task=mtpg/pretrain``, i.e. ``stage=pretrain``; ``configs/task/mtpg/pretrain.yaml``
    passes the ``stage`` settings, the ``data`` group and the trainer keys it reads)."""
    train_table, val_table = read_split_tables(data)
    return PretrainTask(
        model, train_table, val_table, data.image_root, loss_weights=dict(losses),
        ordering_margin=ordering_margin, preference_margin=preference_margin,
        val_matching_images=val_matching_images, eval_batch_size=eval_batch_size,
        num_workers=num_workers, seed=seed, on_bad_image=data.on_bad_image,
        max_pixels=data.max_pixels, standardization_samples=standardization_samples,
    )  # fmt: skip
