"""``cgiaa/vlap``: vision-language aesthetic pretraining — CLIP's image and text encoders
fine-tuned with the symmetric InfoNCE loss on aesthetic image–critique pairs.

Pairs come from a CSV ``image,critique`` (or the released per-attribute JSON files joined to
images by ``img_id``). The temperature is fixed at 0.07 (AesCLIP's; the paper gives none).
Validation: image->text and text->image recall@1 on held-out pairs.

``task.attributes`` (a list of critique columns; empty by default) trains per attribute
instead: the pairs table has one critique column per attribute, and the loss is the mean over
attributes of ``class_infonce`` between the images and that attribute's distinct train
critiques, so pictures sharing a critique are positives of it, not negatives (the CG-IAA toy
quickstart's recipe, docs/cgiaa.md). Validation then reads, per attribute, how often an
image's nearest critique is its own (``val/top1/<attribute>``) and the mean loss.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ....backbone.longclip import trim_text_tokens
from ....data import AestheticsDataset, collate_samples
from ....models.cgiaa.losses import class_infonce, symmetric_infonce
from ....models.cgiaa.prefix import build_release_transform
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

CONTEXT_LENGTH = 77


def clip_of(model: nn.Module) -> nn.Module:
    """The CLIP inside a CG-IAA scorer (or the CLIP itself)."""
    return getattr(model, "clip", model)


class VLAPTask:
    def __init__(self, model: nn.Module, train_pairs: pd.DataFrame, val_pairs: pd.DataFrame, image_root: str | Path,
                 temperature: float = 0.07, eval_batch_size: int = 64, attributes: tuple[str, ...] = ()):  # fmt: skip
        clip = clip_of(model)
        transform = build_release_transform(clip.arch.image_size)
        columns = tuple(attributes) or ("critique",)
        self.train_dataset = AestheticsDataset(train_pairs, image_root, transform, text_names=columns)
        self.val_dataset = AestheticsDataset(val_pairs, image_root, transform, text_names=columns)
        self.tokenizer = get_tokenizer(CONTEXT_LENGTH)
        self.temperature, self.eval_batch_size = temperature, eval_batch_size
        self.attributes = tuple(attributes)
        if self.attributes:
            # Each attribute's distinct train critiques, once (sorted: the class order is fixed).
            self.classes = {a: sorted(set(train_pairs[a])) for a in self.attributes}
            self.class_index = {a: {c: i for i, c in enumerate(self.classes[a])} for a in self.attributes}
            self.class_tokens = trim_text_tokens(self.tokenizer([c for a in self.attributes for c in self.classes[a]]))
            sizes = [len(self.classes[a]) for a in self.attributes]
            self.class_bounds = [sum(sizes[:k]) for k in range(len(sizes) + 1)]

    def collate(self, samples: list) -> dict:
        batch = collate_samples(samples)
        if self.attributes:  # [B, A]: the class of each image's critique; -1 for one no train image has
            rows = range(len(batch["index"]))
            batch["labels"] = torch.tensor([[self.class_index[a].get(batch["texts"][a][i], -1) for a in self.attributes]
                                            for i in rows], dtype=torch.long).reshape(-1, len(self.attributes))  # fmt: skip
        else:
            batch["tokens"] = self.tokenizer(batch["texts"]["critique"])
        return batch

    def _class_loss(self, clip: nn.Module, image: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list]:
        """The mean over attributes of ``class_infonce`` (images with a known critique only), and per
        attribute the logits ``[B, C_a]``."""
        texts = clip.encode_text(self.class_tokens.to(image.device))
        terms, logits = [], []
        for k in range(len(self.attributes)):
            classes = texts[self.class_bounds[k] : self.class_bounds[k + 1]]
            known = labels[:, k] >= 0
            terms.append(class_infonce(image[known], classes, labels[known, k], self.temperature))
            logits.append(F.normalize(image, dim=-1) @ F.normalize(classes, dim=-1).T)
        return torch.stack(terms).mean(), logits

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        clip = clip_of(model)
        image = clip.encode_image(batch["image"].to(device))
        if self.attributes:
            return {"loss": self._class_loss(clip, image, batch["labels"].to(device))[0]}
        text = clip.encode_text(batch["tokens"].to(device))
        loss = symmetric_infonce(image, text, self.temperature)
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        clip = clip_of(model)
        if self.attributes:
            return self._validate_classes(clip, device)
        images, texts = [], []
        for start in range(0, len(self.val_dataset), self.eval_batch_size):
            stop = min(start + self.eval_batch_size, len(self.val_dataset))
            batch = self.collate([self.val_dataset[i] for i in range(start, stop)])
            images.append(clip.encode_image(batch["image"].to(device)))
            texts.append(clip.encode_text(batch["tokens"].to(device)))
        image, text = F.normalize(torch.cat(images), dim=-1), F.normalize(torch.cat(texts), dim=-1)
        similarity = image @ text.T
        target = torch.arange(similarity.shape[0], device=similarity.device)
        loss = float(symmetric_infonce(image, text, self.temperature))
        return {
            "val/loss": loss,
            "val/neg_loss": -loss,  # the trainer keeps the highest monitored value
            "val/i2t_r1": float((similarity.argmax(1) == target).float().mean()),
            "val/t2i_r1": float((similarity.argmax(0) == target).float().mean()),
        }


    def _validate_classes(self, clip: nn.Module, device: torch.device) -> dict[str, float]:
        losses, hits, counts = [], torch.zeros(len(self.attributes)), torch.zeros(len(self.attributes))
        for start in range(0, len(self.val_dataset), self.eval_batch_size):
            stop = min(start + self.eval_batch_size, len(self.val_dataset))
            batch = self.collate([self.val_dataset[i] for i in range(start, stop)])
            labels = batch["labels"].to(device)
            loss, logits = self._class_loss(clip, clip.encode_image(batch["image"].to(device)), labels)
            losses.append(float(loss) * (stop - start))
            for k, values in enumerate(logits):
                known = labels[:, k] >= 0
                hits[k] += float((values.argmax(1)[known] == labels[known, k]).sum())
                counts[k] += float(known.sum())
        loss = sum(losses) / max(len(self.val_dataset), 1)
        top1 = {f"val/top1/{a}": float(hits[k] / counts[k].clamp(min=1)) for k, a in enumerate(self.attributes)}
        return {"val/loss": loss, "val/neg_loss": -loss, **top1}


def read_pairs(csv: str | Path, columns: tuple[str, ...] = ("critique",)) -> pd.DataFrame:
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"{csv}: missing column(s) {', '.join(missing)} (expected image,{','.join(columns)})")
    return table


def build_vlap_task(model: nn.Module, train_pairs: str, val_pairs: str, image_root: str, temperature: float = 0.07,
                    eval_batch_size: int = 64, attributes: list[str] | tuple[str, ...] = ()) -> VLAPTask:  # fmt: skip
    """``task=cgiaa/vlap`` (``configs/task/cgiaa/vlap.yaml``): ``model`` the CG-IAA scorer whose
    CLIP trains; ``train_pairs`` / ``val_pairs`` CSVs of ``image,critique`` (with ``attributes``:
    ``image`` plus one critique column per attribute, trained with one class InfoNCE per attribute)."""
    columns = tuple(attributes) or ("critique",)
    return VLAPTask(model, read_pairs(train_pairs, columns), read_pairs(val_pairs, columns), image_root,
                    temperature=temperature, eval_batch_size=eval_batch_size, attributes=tuple(attributes))  # fmt: skip
