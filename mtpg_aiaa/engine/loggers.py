"""Metric loggers. Every run keeps its history in the run directory (``metrics.csv`` and
``metrics.jsonl``); ``wandb`` mirrors it online or offline."""
from __future__ import annotations

import csv
import json
import math
import uuid
from pathlib import Path
from typing import Any

from ..fileio import atomic_write


class MetricsLogger:
    """History on disk: one row per step (values logged at the same step are merged), as
    JSON lines and as a CSV whose columns grow as keys appear. Both files are rewritten
    whole (atomically) on every call, so neither ever holds a step twice."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        self.csv_path = self.run_dir / "metrics.csv"
        self._rows: list[dict[str, Any]] = _merge_steps(_read_jsonl(self.jsonl_path))  # resumed runs keep their history

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {k: _plain(v) for k, v in metrics.items() if k != "step"}
        if self._rows and self._rows[-1]["step"] == step:
            self._rows[-1].update(row)
        else:
            self._rows.append({"step": step, **row})
        self._write()

    def rewind(self, step: int) -> None:
        """Forget rows after ``step``: a run resumed from a checkpoint of ``step`` logs them again."""
        kept = [row for row in self._rows if row["step"] <= step]
        if len(kept) != len(self._rows):
            self._rows = kept
            self._write()

    def _write(self) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in self._rows)
        atomic_write(self.jsonl_path, lambda tmp: Path(tmp).write_text(lines))
        columns = list(dict.fromkeys(key for r in self._rows for key in r))

        def write_csv(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self._rows)

        atomic_write(self.csv_path, write_csv)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every row logged so far, a resumed run's earlier rows included."""
        return [dict(row) for row in self._rows]

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


def _merge_steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step, in step order (files written before steps were merged had several)."""
    merged: dict[int, dict[str, Any]] = {}
    for row in rows:
        merged.setdefault(row.get("step", 0), {"step": row.get("step", 0)}).update(row)
    return [merged[step] for step in sorted(merged)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
