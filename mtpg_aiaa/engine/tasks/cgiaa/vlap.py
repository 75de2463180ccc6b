"""``cgiaa/vlap``: vision-language aesthetic pretraining — CLIP's image and text encoders
fine-tuned with the symmetric InfoNCE loss on aesthetic image–critique pairs.

Pairs come from a CSV ``image,critique`` (or the released per-attribute JSON files joined to
images by ``img_id``). The temperature is fixed at 0.07 (AesCLIP's; the paper gives none).
Validation: image->text and text->image recall@1 on held-out pairs.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ....data import AestheticsDataset, collate_samples
from ....models.cgiaa.losses import symmetric_infonce
from ....models.cgiaa.prefix import build_release_transform
from mtpg_aiaa.backbone.tokenizer import get_tokenizer

CONTEXT_LENGTH = 77


def clip_of(model: nn.Module) -> nn.Module:
    """The CLIP inside a CG-IAA scorer (or the CLIP itself)."""
    return getattr(model, "clip", model)


class VLAPTask:
    def __init__(self, model: nn.Module, train_pairs: pd.DataFrame, val_pairs: pd.DataFrame, image_root: str | Path,
                 temperature: float = 0.07, eval_batch_size: int = 64):  # fmt: skip
        clip = clip_of(model)
        transform = build_release_transform(clip.arch.image_size)
        self.train_dataset = AestheticsDataset(train_pairs, image_root, transform, text_names=("critique",))
        self.val_dataset = AestheticsDataset(val_pairs, image_root, transform, text_names=("critique",))
        self.tokenizer = get_tokenizer(CONTEXT_LENGTH)
        self.temperature, self.eval_batch_size = temperature, eval_batch_size

    def collate(self, samples: list) -> dict:
        batch = collate_samples(samples)
        batch["tokens"] = self.tokenizer(batch["texts"]["critique"])
        return batch

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        clip = clip_of(model)
        image = clip.encode_image(batch["image"].to(device))
        text = clip.encode_text(batch["tokens"].to(device))
        loss = symmetric_infonce(image, text, self.temperature)
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        clip = clip_of(model)
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


def read_pairs(csv: str | Path) -> pd.DataFrame:
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", "critique") if c not in table.columns]
    if missing:
        raise ValueError(f"{csv}: missing column(s) {', '.join(missing)} (expected image,critique)")
    return table


def build_vlap_task(model: nn.Module, train_pairs: str, val_pairs: str, image_root: str, temperature: float = 0.07,
                    eval_batch_size: int = 64) -> VLAPTask:  # fmt: skip
    """``task=cgiaa/vlap`` (``configs/task/cgiaa/vlap.yaml``): ``model`` the CG-IAA scorer whose
    CLIP trains; ``train_pairs`` / ``val_pairs`` CSVs of ``image,critique``."""
    return VLAPTask(model, read_pairs(train_pairs), read_pairs(val_pairs), image_root, temperature=temperature,
                    eval_batch_size=eval_batch_size)  # fmt: skip
