"""Writing files so that a crash or a kill never leaves a half-written one in place."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a failed write leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def file_kind(path: str | Path) -> str:
    """``safetensors``, ``torch`` (a ``torch.save`` zip or legacy pickle) or ``unknown``,
    from the file's first bytes: weight files are told apart by content, never by suffix."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte little-endian header length, then JSON
        header_length = int.from_bytes(head[:8], "little")
        if 2 <= header_length <= Path(path).stat().st_size - 8:
            return "safetensors"
    return "unknown"
