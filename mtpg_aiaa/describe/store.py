"""Crash-safe storage of descriptions: per-shard part files, resume, and the merged CSV.

Each shard appends one JSON line per image to ``OUTPUT.parts/rankR-ofW.part.jsonl`` and
fsyncs after every batch, so a crash loses at most the batch in flight (its torn last
line is cut off when that shard restarts). A restart reads *all* part files, whatever
shard layout wrote them, and skips every image already there. When every input image has
a record, the CSV is written in input order to a temporary file and ``os.replace``d.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from mtpg_aiaa.data.errors import BadInputError

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "score", "comment")
RUN_SETTINGS_FILE = "run.json"
RUN_LOG_SUFFIX = ".runs.jsonl"  # per shard, one line per finished run: how many images, how long
PART_SUFFIX = ".part.jsonl"
_TAIL_CHUNK = 1 << 16


def parts_dir_for(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def repair_torn_tail(path: Path) -> int:
    """Cut ``path`` after its last newline; returns how many bytes were dropped (0: intact)."""
    if not path.is_file():
        return 0
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            logger.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", path, size - keep)
        return size - keep


class PartWriter:
    """Appends records of one shard; every :meth:`append` is on disk when it returns."""

    def __init__(self, parts_dir: Path, shard_name: str):
        parts_dir.mkdir(parents=True, exist_ok=True)
        self.path = parts_dir / f"{shard_name}{PART_SUFFIX}"
        self.repaired_bytes = repair_torn_tail(self.path)
        self._handle = self.path.open("a", encoding="utf-8", newline="\n")

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(parts_dir: Path) -> dict[str, dict[str, Any]]:
    """Every finished record under ``parts_dir`` by image name (first one wins).

    A last line without its newline is another shard still writing or a torn line its
    owner will repair: it is ignored, never parsed. A broken line anywhere else is an error.
    """
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(parts_dir.glob(f"*{PART_SUFFIX}")) if parts_dir.is_dir() else []:
        for record in read_json_lines(path, required_key="image"):
            records.setdefault(record["image"], record)
    return records


def read_json_lines(path: Path, required_key: str) -> list[dict[str, Any]]:
    """The complete lines of an append-only JSON-lines file (an unfinished last line is left out)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1]: "" or an unfinished line
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record[required_key]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise BadInputError(
                f"{path}, line {number}: not a valid record ({type(error).__name__}: {error}); "
                "delete the line (or the file) to describe those images again"
            ) from error
        records.append(record)
    return records


def append_json_line(path: Path, record: dict[str, Any]) -> None:
    """One line appended and fsynced to a file only this shard writes (its run log)."""
    repair_torn_tail(path)
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def check_run_settings(parts_dir: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` for a new output, or refuse to mix with a run made differently."""
    path = parts_dir / RUN_SETTINGS_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
        if changed:
            details = "; ".join(f"{key}: {previous.get(key)!r} -> {settings.get(key)!r}" for key in changed)
            raise ValueError(
                f"{parts_dir} was started with other describer settings ({details}). Resuming would mix "
                "descriptions made differently: use another output, or overwrite=true to start again"
            )
        return
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it and ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_descriptions_csv(path: Path, rows: Iterable[tuple[str, str, str]]) -> None:
    """``image,score,comment`` rows, as ``read_score_table`` reads them, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
