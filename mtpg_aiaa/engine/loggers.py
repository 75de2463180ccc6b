"""Metric loggers. Every run keeps its history in the run directory (``metrics.csv`` and
``metrics.jsonl``); ``wandb`` mirrors it online or offline."""
from __future__ import annotations

import csv
import json
import math
import uuid
from pathlib import Path
from typing import Any


class MetricsLogger:
    """History on disk: one JSON line per call, and a CSV whose columns grow as keys appear."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self._rows: list[dict[str, Any]] = _read_jsonl(self.jsonl_path)  # resumed runs keep their history

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items() if k != "step"}}
        self._rows.append(row)
        with self.jsonl_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        columns = list(dict.fromkeys(key for r in self._rows for key in r))
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self._rows)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every row logged so far, a resumed run's earlier rows included."""
        return list(self._rows)

    def close(self) -> None:
        pass


class WandbLogger(MetricsLogger):
    """Also sends metrics to Weights & Biases (``mode``: online | offline | disabled)."""

    def __init__(self, run_dir: str | Path, project: str, mode: str = "online", name: str | None = None,
                 config: dict | None = None, entity: str | None = None):  # fmt: skip
        super().__init__(run_dir)
        import wandb

        self._wandb = wandb
        # The run id lives in the run dir, so a resumed or requeued job continues the same wandb run.
        id_file = self.run_dir / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(project=project, entity=entity, name=name, mode=mode, config=config,
                              dir=str(self.run_dir), id=run_id, resume="allow")  # fmt: skip

    def log(self, metrics: dict[str, float], step: int) -> None:
        super().log(metrics, step)
        self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=step)

    def close(self) -> None:
        self.run.finish()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
