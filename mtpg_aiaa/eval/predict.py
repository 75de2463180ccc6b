"""The one prediction loop: every scoring of a dataset goes through ``predict`` — ``test.py``,
the score CLI and Python API (``api.py``), MTPG-AIAA's feature-cache validation
(``score_features`` on cached features) and the CG-IAA / AesNet validation loops.

Batching matters for ``fusion=official`` (its outputs depend on the whole batch), so
the loop offers both the authors' test protocol (consecutive batches in CSV order,
``batching="batch"``) and the demo's (every image alone, ``batching="per_image"``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..errors import SettingError
from .predictions import empty_frame, prediction_frame, scaled_column

BATCHINGS = ("batch", "per_image")


@dataclass
class Predictions:
    """Per-image outputs in input order, plus the images that were skipped."""

    table: pd.DataFrame  # columns: index, image, [score, target], pred, pred_0_1, distribution columns (predictions.py)
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
    forward: Callable[[dict], dict] | None = None,
    desc: str = "scoring",
) -> Predictions:
    """Score every sample of ``loader`` with ``forward(inputs)``, by default ``model(inputs)``
    (the scorer interface, ``models/base.py``).

    Args:
        loader: batches from ``collate_samples`` (images), ``collate_features`` (cached
            features) or a task's collate built on them: ``index``, ``image_name``, optional
            labels ``score`` / ``target``, ``skipped``, and what ``model_inputs`` moves.
        batching: ``batch`` scores each loader batch as one forward pass (the official
            test protocol when the loader yields batches of 16 in CSV order);
            ``per_image`` scores every image alone (the official demo).
        forward: ``inputs -> {"score": [B], optional "distribution": [B, K]}``; e.g.
            ``model.score_features`` for cached features.
    """
    if batching not in BATCHINGS:
        raise SettingError(f"eval.batching must be one of {BATCHINGS}, got {batching!r}")
    forward = model if forward is None else forward
    was_training = model.training
    model.eval()
    rows: list[pd.DataFrame] = []
    skipped: list[dict] = []
    start = time.perf_counter()
    if isinstance(loader.batch_sampler, list):  # a shard of whole batches (distributed test.py)
        total = sum(len(batch) for batch in loader.batch_sampler)
    else:
        total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    waiting_s, batches = 0.0, iter(loader)
    try:
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
                    outputs = forward(inputs)
                else:
                    outputs = _concat_outputs([forward(_sample(inputs, i)) for i in range(len(batch["index"]))])
                rows.append(prediction_frame(batch, outputs, model))
                bar.update(len(batch["index"]) + len(batch.get("skipped", [])))
                bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        model.train(was_training)  # a validation loop hands the model back as it found it
    seconds = time.perf_counter() - start
    table = pd.concat(rows, ignore_index=True) if rows else empty_frame(model)
    return Predictions(table.sort_values("index", kind="stable").reset_index(drop=True), skipped, seconds, waiting_s)


MODEL_INPUT_KEYS = ("image", "tokens", "description_tokens", "features")


def model_inputs(batch: dict, device: torch.device) -> dict:
    """What a scorer reads from a batch, on ``device``: ``image [B, 3, H, W]``, ``tokens``
    (``{name: [B, L]}``), for older callers ``description_tokens [B, L]``, and cached
    ``features`` (``{name: [B, ...]}``, read by ``score_features``)."""
    inputs = {}
    for key in MODEL_INPUT_KEYS:
        if key in batch:
            value = batch[key]
            inputs[key] = ({name: v.to(device, non_blocking=True) for name, v in value.items()} if isinstance(value, dict)
                           else value.to(device, non_blocking=True))  # fmt: skip
    return inputs


def _sample(inputs: dict, i: int) -> dict:
    """Sample ``i`` of ``model_inputs`` as a batch of one."""
    return {key: ({name: v[i : i + 1] for name, v in value.items()} if isinstance(value, dict) else value[i : i + 1])
            for key, value in inputs.items()}  # fmt: skip


def _concat_outputs(outputs: list[dict]) -> dict:
    return {key: torch.cat([output[key] for output in outputs]) for key in ("score", "distribution")
            if key in outputs[0]}  # fmt: skip


def write_predictions(predictions: Predictions, output_dir: Path, score_scale: float) -> Path:
    """``predictions.csv`` (``image``, the label ``score``, the prediction on the label's scale
    ``pred_0_<score_scale>`` and the distribution columns; input order) and, if any image was
    skipped, ``skipped.csv`` naming each one and why."""
    output_dir.mkdir(parents=True, exist_ok=True)
    table = predictions.table.copy()
    scaled = scaled_column(score_scale)
    table[scaled] = table["pred_0_1"] * score_scale
    columns = ["image", "score", scaled, *[c for c in table.columns if c.startswith(("prob_", "dist_"))]]
    path = output_dir / "predictions.csv"
    table[columns].to_csv(path, index=False, float_format="%.6f")
    skipped = output_dir / "skipped.csv"
    if predictions.skipped:
        pd.DataFrame(predictions.skipped).to_csv(skipped, index=False)
    elif skipped.exists():
        skipped.unlink()  # a reused output folder must not show an earlier run's skipped images
    return path
