"""``cgiaa/expert``: one attribute expert trained with ClipCap's recipe (MAEL).

CLIP is frozen and its normalised prefixes are computed once per image before training;
GPT-2 is frozen by default (``model.freeze=frozen``), so only the mapper learns. Captions get the
release's trailing "." and are cut or padded to ``task.max_tokens`` (40). The loss is next-token
cross-entropy after the prefix; ``task.released_padding=true`` reproduces the release's
``ignore_index=0`` (which also never learns token 0, "!"), otherwise padding is masked.
Data: the released ``<attribute>.json`` (``{id, img_id, caption}``) joined to images named
``task.image_pattern`` (``{img_id}.jpg``) under ``task.image_root``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from ....backbone.clip import load_clip
from ....data import AestheticsDataset, collate_samples
from ....models.cgiaa.critique_data import add_period, read_critique_json
from ....models.cgiaa.expert import CritiqueExpert
from ....models.cgiaa.losses import critique_token_loss
from ....models.cgiaa.prefix import build_release_transform, clip_prefix
from ....models.cgiaa.tokenizer import load_gpt2_tokenizer

log = logging.getLogger(__name__)
RELEASED_MAX_TOKENS = 40


def encode_captions(tokenizer, captions: list[str], max_tokens: int = RELEASED_MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> ``tokens [N, max_tokens]`` (padded with 0, cut at ``max_tokens``) and ``mask [N, max_tokens]``."""
    tokens = torch.zeros(len(captions), max_tokens, dtype=torch.long)
    mask = torch.zeros(len(captions), max_tokens)
    for row, caption in enumerate(captions):
        ids = tokenizer.encode(add_period(caption))[:max_tokens]
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return tokens, mask


@torch.no_grad()
def compute_prefixes(clip: nn.Module, images: pd.DataFrame, image_root: str | Path, device: torch.device,
                     batch_size: int = 64) -> torch.Tensor:  # fmt: skip
    """``[N, D]`` normalised CLIP prefixes of ``images["image"]`` (released preprocessing)."""
    rows = AestheticsDataset(images.reset_index(drop=True), image_root, build_release_transform(clip.arch.image_size))
    out = []
    for start in range(0, len(rows), batch_size):
        batch = collate_samples([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        out.append(clip_prefix(clip, batch["image"].to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, clip.embed_dim)


class CaptionPrefixes(Dataset):
    """Caption ``i`` -> ``(tokens [L], mask [L], prefix [D])``."""

    def __init__(self, tokens: torch.Tensor, mask: torch.Tensor, prefixes: torch.Tensor, prefix_rows: torch.Tensor):
        self.tokens, self.mask, self.prefixes, self.prefix_rows = tokens, mask, prefixes, prefix_rows

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"tokens": self.tokens[index], "mask": self.mask[index], "prefix": self.prefixes[self.prefix_rows[index]]}


class ExpertTask:
    def __init__(self, train: CaptionPrefixes, val: CaptionPrefixes, released_padding: bool = False):
        self.train_dataset, self.val_dataset, self.released_padding = train, val, released_padding

    def collate(self, samples: list) -> dict:
        return {key: torch.stack([s[key] for s in samples]) for key in ("tokens", "mask", "prefix")}

    def _loss(self, expert: CritiqueExpert, batch: dict, device: torch.device) -> torch.Tensor:
        tokens, mask, prefix = batch["tokens"].to(device), batch["mask"].to(device), batch["prefix"].to(device)
        full_mask = torch.cat([torch.ones(mask.shape[0], expert.prefix_length, device=device), mask], dim=1)
        logits = expert(tokens, prefix, full_mask)
        return critique_token_loss(logits, tokens, expert.prefix_length, mask, self.released_padding)

    def training_step(self, model: nn.Module, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
        return {"loss": self._loss(model, batch, device)}

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, batch_size: int = 64) -> dict[str, float]:
        losses, weights = [], []
        for start in range(0, len(self.val_dataset), batch_size):
            batch = self.collate([self.val_dataset[i] for i in range(start, min(start + batch_size, len(self.val_dataset)))])
            losses.append(float(self._loss(model, batch, device)))
            weights.append(float(batch["mask"].sum()))
        loss = sum(l * w for l, w in zip(losses, weights)) / max(sum(weights), 1.0)
        return {"val/loss": loss, "val/neg_loss": -loss}


def build_datasets(critiques: pd.DataFrame, image_pattern: str, clip: nn.Module, image_root: str | Path,
                   tokenizer, max_tokens: int, device: torch.device) -> CaptionPrefixes:  # fmt: skip
    """Captions joined to images; every image's prefix computed once."""
    images = pd.DataFrame({"img_id": critiques["img_id"].unique()})
    images["image"] = [image_pattern.format(img_id=i) for i in images["img_id"]]
    prefixes = compute_prefixes(clip, images, image_root, device)
    row_of = {img_id: row for row, img_id in enumerate(images["img_id"])}
    tokens, mask = encode_captions(tokenizer, list(critiques["caption"]), max_tokens)
    return CaptionPrefixes(tokens, mask, prefixes, torch.tensor([row_of[i] for i in critiques["img_id"]]))


def build_expert_task(model: nn.Module, attribute: str, critique_dir: str, image_root: str, clip_weights: str,
                      image_pattern: str = "{img_id}.jpg", tokenizer: str = "gpt2", max_tokens: int = 40,
                      released_padding: bool = False, device: str = "auto") -> ExpertTask:  # fmt: skip
    """``task=cgiaa/expert attribute=<name>`` (``configs/task/cgiaa/expert.yaml``): ``model`` the
    expert being trained (GPT-2 frozen or not by ``model.freeze``); ``clip_weights`` the frozen
    CLIP whose prefixes it reads, computed once on ``device``."""
    where = torch.device("cuda" if torch.cuda.is_available() and device != "cpu" else "cpu")
    clip = load_clip(clip_weights, device=where).requires_grad_(False)
    gpt2_tokenizer = load_gpt2_tokenizer(tokenizer)
    splits = {}
    for split in ("train", "val"):
        critiques = read_critique_json(Path(critique_dir) / split / f"{attribute}.json")
        splits[split] = build_datasets(critiques, image_pattern, clip, image_root, gpt2_tokenizer, max_tokens, where)
    return ExpertTask(splits["train"], splits["val"], released_padding)
