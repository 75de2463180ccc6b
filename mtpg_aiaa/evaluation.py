"""Scoring a dataset with an MTPG-AIAA model: the prediction loop and its outputs.

Batching matters for ``fusion=official`` (its outputs depend on the whole batch), so
the loop offers both the authors' test protocol (consecutive batches in CSV order,
``batching="batch"``) and the demo's (every image alone, ``batching="per_image"``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .models.mtpg.model import MTPGAIAA
from .errors import SettingError
from .models.mtpg.prompts import LEVELS, expected_score

BATCHINGS = ("batch", "per_image")


@dataclass
class Predictions:
    """Per-image outputs in input order, plus the images that were skipped."""

    table: pd.DataFrame  # columns: index, image, score, target, pred (0-1), prob_<level>
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def merge(cls, parts: list["Predictions"]) -> "Predictions":
        """One table in input order from shards scored in parallel (``seconds``: the slowest)."""
        tables = [part.table for part in parts if not part.table.empty]
        table = pd.concat(tables, ignore_index=True) if tables else _empty_table()
        skipped = sorted((row for part in parts for row in part.skipped), key=lambda row: row.get("index", 0))
        return cls(table.sort_values("index", kind="stable").reset_index(drop=True), skipped,
                   max(part.seconds for part in parts))  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.inference_mode()
def predict(
    model: MTPGAIAA,
    loader: DataLoader,
    device: torch.device,
    batching: str = "batch",
    progress: bool = True,
) -> Predictions:
    """Score every sample of ``loader`` (batches from ``collate_samples``).

    Args:
        batching: ``batch`` scores each loader batch as one forward pass (the official
            test protocol when the loader yields batches of 16 in CSV order);
            ``per_image`` scores every image alone (the official demo).
    """
    if batching not in BATCHINGS:
        raise SettingError(f"eval.batching must be one of {BATCHINGS}, got {batching!r}")
    model.eval()
    rows: list[pd.DataFrame] = []
    skipped: list[dict] = []
    start = time.perf_counter()
    if isinstance(loader.batch_sampler, list):  # a shard of whole batches (distributed test.py)
        total = sum(len(batch) for batch in loader.batch_sampler)
    else:
        total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
    bar = tqdm(total=total, desc="scoring", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        for batch in loader:
            skipped.extend(batch.get("skipped", []))
            if len(batch["index"]) == 0:
                bar.update(len(batch.get("skipped", [])))
                continue
            images = batch["image"].to(device, non_blocking=True)
            tokens = batch["description_tokens"].to(device, non_blocking=True)
            if batching == "batch":
                probs = model(images, tokens)["probs"]
            else:
                probs = torch.cat([model(images[i : i + 1], tokens[i : i + 1])["probs"] for i in range(len(images))])
            rows.append(_batch_rows(batch, probs.float().cpu()))
            bar.update(len(batch["index"]) + len(batch.get("skipped", [])))
            bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")
    seconds = time.perf_counter() - start
    table = pd.concat(rows, ignore_index=True) if rows else _empty_table()
    return Predictions(table.sort_values("index", kind="stable").reset_index(drop=True), skipped, seconds)


def _batch_rows(batch: dict, probs: torch.Tensor) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "index": batch["index"].tolist(),
            "image": list(batch["image_name"]),
            "score": [float(s) for s in batch["score"]],
            "target": batch["target"].float().tolist(),
            "pred": expected_score(probs).tolist(),
        }
    )
    for level, column in zip(LEVELS, probs.T):
        frame[f"prob_{level}"] = column.tolist()
    return frame


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=["index", "image", "score", "target", "pred", *[f"prob_{lv}" for lv in LEVELS]])


def write_predictions(predictions: Predictions, output_dir: Path, score_scale: float) -> Path:
    """``predictions.csv`` (``image,score,pred,prob_*``; pred on the score's scale, input order)
    and, if any image was skipped, ``skipped.csv`` naming each one and why."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table = predictions.table.copy()
    table["pred"] = table["pred"] * score_scale
    columns = ["image", "score", "pred", *[f"prob_{lv}" for lv in LEVELS]]
    path = output_dir / "predictions.csv"
    table[columns].to_csv(path, index=False, float_format="%.6f")
    skipped = output_dir / "skipped.csv"
    if predictions.skipped:
        pd.DataFrame(predictions.skipped).to_csv(skipped, index=False)
    elif skipped.exists():
        skipped.unlink()  # a reused output folder must not show an earlier run's skipped images
    return path
