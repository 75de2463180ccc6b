"""``aesnet/pretrain``: multi-attribute contrastive pretraining of an image encoder against
frozen, cached description features, with the semantic affinity loss (docs/aesnet.md).

Every loss sees the global batch: embeddings, masks and features are gathered across
ranks with ``gather_with_grad``, so each description is a negative for every image of
every rank and the step equals one process running the whole batch.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from ....models.aesnet import AesNetConfig, AesNetPretrainModel, attribute_prompt
from ....models.aesnet.losses import (
    AFFINITY_READINGS,
    check_attribute_weights,
    multi_attribute_info_nce,
    preserve_affinity_loss,
    restrain_affinity_loss,
)
from ....models.aesnet.model import CONTENT_ATTRIBUTE, build_image_transform
from ....models.aesnet.text import DescriptionFeatureCache, FrozenTextEncoder
from ....errors import SettingError
from ...checkpointing import unwrap
from ...distributed import gather_with_grad
from ...seeding import PerSampleSeeded
from ....data.dataset import collate_samples
from .data import TextFeatureIndex, read_attribute_table, table_image_dataset

log = logging.getLogger(__name__)


def aesnet_pretrain_losses(model: AesNetPretrainModel, outputs: Mapping, present: Mapping[str, torch.Tensor],
                           content: torch.Tensor | None, weights: Mapping[str, float], affinity: str | None,
                           affinity_weight: float) -> dict[str, torch.Tensor]:  # fmt: skip
    """``L = L_con + lambda L_aff`` on one (gathered) batch.

    Args:
        model: for its temperatures.
        outputs: the model's forward: ``backbone [B, C]``, ``image``/``text`` ``{a: [B, D]}``,
            ``reference [B, C]`` (preserve).
        present: ``{a: [B] bool}``.
        content: ``[B, E]`` frozen content-description features (restrain); rows without
            one are dropped from that term.
        weights: attribute weights ``w_a``; affinity: ``preserve`` | ``restrain`` | None.

    Returns:
        ``loss`` and each term, detached.
    """
    scales = {a: model.logit_scale(a) for a in weights}
    terms = multi_attribute_info_nce(outputs["image"], outputs["text"], present, scales, weights)
    loss = terms["contrastive"]
    if affinity and affinity_weight:
        if affinity == "preserve":
            value = preserve_affinity_loss(outputs["backbone"], outputs["reference"])
        elif affinity == "restrain":
            has_content = present[CONTENT_ATTRIBUTE].bool()
            value = restrain_affinity_loss(outputs["backbone"][has_content], content[has_content])
        else:
            raise ValueError(f"affinity must be one of {AFFINITY_READINGS} or null, got {affinity!r}")
        terms["affinity"] = value
        loss = loss + affinity_weight * value
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


class AesNetPretrainTask:
    """Rows of a multi-text table -> images + cached description features -> losses;
    validation -> per-attribute image-to-description top-1 retrieval on the validation rows
    (``val/retrieval``, the mean over attributes, is the checkpoint monitor).

    Args:
        model: the pretraining model.
        text_encoder: the frozen text tower (used here once, to fill the cache).
        cache_file: where the description features are kept between runs (optional).
    """

    def __init__(self, model: AesNetPretrainModel, text_encoder: FrozenTextEncoder, train_table: pd.DataFrame,
                 val_table: pd.DataFrame | None, image_root: str, weights: Mapping[str, float],
                 affinity: str | None = None, affinity_weight: float = 0.0, cache_file: str | None = None,
                 eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0, on_bad_image: str = "error"):  # fmt: skip
        base = unwrap(model)
        self.attributes = base.attributes
        self.weights = {a: float(w) for a, w in weights.items()}
        check_attribute_weights(self.weights, self.attributes)
        if affinity not in (None, *AFFINITY_READINGS):
            raise ValueError(f"affinity must be one of {AFFINITY_READINGS} or null, got {affinity!r}")
        if affinity == "preserve" and base.reference is None:
            raise ValueError("affinity=preserve needs a reference encoder: set the model's reference: true")
        if affinity == "restrain" and CONTENT_ATTRIBUTE not in self.attributes:
            raise ValueError(f"affinity=restrain needs a {CONTENT_ATTRIBUTE!r} attribute column")
        self.affinity, self.affinity_weight = affinity, float(affinity_weight)
        self.eval_batch_size, self.num_workers = eval_batch_size, num_workers
        # The tower encodes every distinct description once, on the model's device, then
        # goes back to the CPU: training reads only the cached features.
        text_encoder.to(next(base.parameters()).device)
        cache = DescriptionFeatureCache(text_encoder)
        if cache_file and Path(cache_file).is_file():
            cache.load(cache_file)
        tables = [train_table] + ([val_table] if val_table is not None else [])
        new = sum(cache.add(t[a].tolist()) for t in tables for a in self.attributes)
        if cache_file and new:
            cache.save(cache_file)
        text_encoder.to("cpu")
        log.info("description features: %d distinct, %d newly encoded", len(cache), new)
        self.train_text = TextFeatureIndex(cache, train_table, self.attributes)
        log.info("training rows per attribute: %s", self.train_text.counts())
        self.train_dataset = PerSampleSeeded(
            table_image_dataset(train_table, image_root, build_image_transform(base.backbone, train=True),
                                on_bad_image=on_bad_image), seed)  # fmt: skip
        self.val_dataset = self.val_text = None
        if val_table is not None and len(val_table):
            self.val_text = TextFeatureIndex(cache, val_table, self.attributes)
            self.val_dataset = table_image_dataset(val_table, image_root, build_image_transform(base.backbone),
                                                   on_bad_image=on_bad_image)  # fmt: skip

    def collate(self, samples: list) -> dict:
        batch = collate_samples(samples)
        batch["text"], batch["present"] = self.train_text.lookup(batch["index"])
        return batch

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        base = unwrap(model)
        text = {a: v.to(device, non_blocking=True) for a, v in batch["text"].items()}
        outputs = base(batch["image"].to(device, non_blocking=True), text)
        gathered = {
            "backbone": gather_with_grad(outputs["backbone"]),
            "image": {a: gather_with_grad(v) for a, v in outputs["image"].items()},
            "text": {a: gather_with_grad(v) for a, v in outputs["text"].items()},
        }  # fmt: skip
        if "reference" in outputs:
            gathered["reference"] = gather_with_grad(outputs["reference"])
        present = {a: gather_with_grad(v.to(device)) for a, v in batch["present"].items()}
        content = gather_with_grad(text[CONTENT_ATTRIBUTE]) if self.affinity == "restrain" else None
        return aesnet_pretrain_losses(base, gathered, present, content, self.weights, self.affinity,
                                      self.affinity_weight)  # fmt: skip

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        base = unwrap(model).eval()
        loader = DataLoader(self.val_dataset, batch_size=self.eval_batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=collate_samples)  # fmt: skip
        images: dict[str, list[torch.Tensor]] = {a: [] for a in self.attributes}
        texts: dict[str, list[torch.Tensor]] = {a: [] for a in self.attributes}
        masks: dict[str, list[torch.Tensor]] = {a: [] for a in self.attributes}
        for batch in loader:
            if not len(batch["index"]):
                continue
            text, present = self.val_text.lookup(batch["index"])
            outputs = base(batch["image"].to(device), {a: v.to(device) for a, v in text.items()})
            for a in self.attributes:
                images[a].append(outputs["image"][a].cpu())
                texts[a].append(outputs["text"][a].cpu())
                masks[a].append(present[a])
        metrics = {}
        for a in self.attributes:
            if not masks[a]:
                continue
            m = torch.cat(masks[a])
            if int(m.sum()) < 2:
                continue
            metrics[f"val/retrieval/{a}"] = retrieval_top1(torch.cat(images[a])[m], torch.cat(texts[a])[m])
        if metrics:
            metrics["val/retrieval"] = sum(metrics.values()) / len(metrics)
        return metrics


def retrieval_top1(image: torch.Tensor, text: torch.Tensor) -> float:
    """Image-to-text top-1 accuracy: the share of rows whose own description is the nearest
    of all ``N`` (``[N, D]`` each, l2-normalised). Chance is ``1 / N``."""
    predicted = (image @ text.T).argmax(dim=-1)
    return float((predicted == torch.arange(len(image))).float().mean())


def build_pretrain_model(encoder: str, text_backbone: str, attributes: list[str], embed_dim: int,
                         hidden_dim: int, integration: str, per_attribute_temperature: bool,
                         affinity: str | None = None, image_size: int | None = None,
                         encoder_weights: str | None = None,
                         text_weights: str | None = None) -> AesNetPretrainModel:  # fmt: skip
    """The pretraining model and its frozen text tower (``configs/model/aesnet/pretrain.yaml``).

    ``affinity="preserve"`` keeps a frozen copy of the starting encoder for its loss;
    ``encoder_weights`` / ``text_weights``: the encoder's own-layout file and Long-CLIP's
    (``None``: random). The text tower embeds the attribute prompts here and the descriptions in
    the task; it is kept beside the model, not in its weights (so ``init_from`` never replaces it)."""
    text_encoder = FrozenTextEncoder(text_backbone, text_weights)
    config = AesNetConfig(encoder=encoder, image_size=image_size, attributes=tuple(attributes),
                          embed_dim=int(embed_dim), hidden_dim=int(hidden_dim), integration=integration,
                          per_attribute_temperature=bool(per_attribute_temperature),
                          reference=affinity == "preserve")  # fmt: skip
    prompts = text_encoder.encode([attribute_prompt(a) for a in config.attributes])
    model = AesNetPretrainModel(config, prompts, encoder_weights)
    # Kept beside the model, not inside it: the frozen tower is not part of its weights or
    # of its .to(); the task uses it once to fill the description cache.
    object.__setattr__(model, "text_encoder", text_encoder)
    return model


build_pretrain_model.weights_beside_model = ("text_weights",)  # engine/builders.py: init_from keeps it


def build_pretrain_task(model: nn.Module, data: Mapping, affinity: str | None, affinity_weight: float,
                        weights: Mapping[str, float] | None = None, text_cache: str | None = None,
                        eval_batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> AesNetPretrainTask:  # fmt: skip
    """``task=aesnet/pretrain`` (``configs/task/aesnet/pretrain.yaml``): ``model`` from
    :func:`build_pretrain_model` (its attributes and text tower are used); ``data`` the
    table, image root, splits and ``on_bad_image``; ``weights`` per attribute (None: 1 each)."""
    text_encoder = getattr(unwrap(model), "text_encoder", None)
    if text_encoder is None:
        raise SettingError("task=aesnet/pretrain needs the model of model=aesnet/pretrain (build_pretrain_model), "
                           f"which carries the frozen text tower; got {type(unwrap(model)).__name__}")  # fmt: skip
    attributes = tuple(unwrap(model).attributes)
    train_table = read_attribute_table(data["table"], attributes, split=data.get("train_split"))
    val_table = read_attribute_table(data["table"], attributes, split=data["val_split"]) \
        if data.get("val_split") else None  # fmt: skip
    return AesNetPretrainTask(
        model, text_encoder, train_table, val_table, data["image_root"],
        weights=dict(weights) if weights else {a: 1.0 for a in attributes},
        affinity=affinity, affinity_weight=affinity_weight, cache_file=text_cache,
        eval_batch_size=eval_batch_size, num_workers=num_workers,
        seed=seed, on_bad_image=data.get("on_bad_image", "error"),
    )  # fmt: skip
