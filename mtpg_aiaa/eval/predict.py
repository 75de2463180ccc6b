"""Scoring a dataset with any system's scorer: the prediction loop and its outputs.

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

from ..errors import SettingError
from .predictions import empty_frame, prediction_frame

BATCHINGS = ("batch", "per_image")


@dataclass
class Predictions:
    """Per-image outputs in input order, plus the images that were skipped."""

    table: pd.DataFrame  # columns: index, image, score, target, pred (0-1), distribution columns (predictions.py)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    waiting_s: float = 0.0  # of ``seconds``, waiting for the loader's next batch (decoding not keeping up)

    @property
    def images_per_second(self) -> float:
        return len(self.table) / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def merge(cls, parts: list["Predictions"]) -> "Predictions":
        """One table in input order from shards scored in parallel (``seconds``: the slowest)."""
        tables = [part.table for part in parts if not part.table.empty]
        table = pd.concat(tables, ignore_index=True) if tables else empty_frame()
        skipped = sorted((row for part in parts for row in part.skipped), key=lambda row: row.get("index", 0))
        return cls(table.sort_values("index", kind="stable").reset_index(drop=True), skipped,
                   max(part.seconds for part in parts), max(part.waiting_s for part in parts))  # fmt: skip


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    device: torch.device,
    batching: str = "batch",
    progress: bool = True,
) -> Predictions:
    """Score every sample of ``loader`` (batches from ``collate_samples``) with ``model(batch)``
    (the scorer interface, ``models/base.py``).

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
    waiting_s, batches = 0.0, iter(loader)
    with bar:
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            waiting_s += time.perf_counter() - wait_start
            if batch is None:
                break
            skipped.extend(batch.get("skipped", []))
            if len(batch["index"]) == 0:
                bar.update(len(batch.get("skipped", [])))
                continue
            inputs = model_inputs(batch, device)
            if batching == "batch":
                outputs = model(inputs)
            else:
                outputs = _concat_outputs([model(_sample(inputs, i)) for i in range(len(batch["index"]))])
            rows.append(prediction_frame(batch, outputs, model))
            bar.update(len(batch["index"]) + len(batch.get("skipped", [])))
            bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")
    seconds = time.perf_counter() - start
    table = pd.concat(rows, ignore_index=True) if rows else empty_frame(model)
    return Predictions(table.sort_values("index", kind="stable").reset_index(drop=True), skipped, seconds, waiting_s)


def model_inputs(batch: dict, device: torch.device) -> dict:
    """What a scorer's ``forward`` reads from a ``collate_samples`` batch, on ``device``:
    ``image``, ``tokens`` (``{name: [B, L]}``) and, for older callers, ``description_tokens``."""
    inputs = {"image": batch["image"].to(device, non_blocking=True)}
    if "tokens" in batch:
        inputs["tokens"] = {name: value.to(device, non_blocking=True) for name, value in batch["tokens"].items()}
    if "description_tokens" in batch:
        inputs["description_tokens"] = batch["description_tokens"].to(device, non_blocking=True)
    return inputs


def _sample(inputs: dict, i: int) -> dict:
    """Sample ``i`` of ``model_inputs`` as a batch of one."""
    return {key: ({name: v[i : i + 1] for name, v in value.items()} if isinstance(value, dict) else value[i : i + 1])
            for key, value in inputs.items()}  # fmt: skip


def _concat_outputs(outputs: list[dict]) -> dict:
    return {key: torch.cat([output[key] for output in outputs]) for key in ("score", "distribution")
            if key in outputs[0]}  # fmt: skip


def write_predictions(predictions: Predictions, output_dir: Path, score_scale: float) -> Path:
    """``predictions.csv`` (``image,score,pred`` and the distribution columns; pred on the score's scale, input order)
    and, if any image was skipped, ``skipped.csv`` naming each one and why."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table = predictions.table.copy()
    table["pred"] = table["pred"] * score_scale
    columns = ["image", "score", "pred", *[c for c in table.columns if c.startswith(("prob_", "dist_"))]]
    path = output_dir / "predictions.csv"
    table[columns].to_csv(path, index=False, float_format="%.6f")
    skipped = output_dir / "skipped.csv"
    if predictions.skipped:
        pd.DataFrame(predictions.skipped).to_csv(skipped, index=False)
    elif skipped.exists():
        skipped.unlink()  # a reused output folder must not show an earlier run's skipped images
    return path
