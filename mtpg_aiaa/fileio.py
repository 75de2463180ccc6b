"""Writing files so that a crash or a kill never leaves a half-written one in place."""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a failed write leaves ``path`` as it was.

    The temporary file (``.NAME.<random>.tmp`` in the same folder) is created like any other
    output, so the result gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    A kill between creation and rename can leave it behind: see :func:`remove_stale_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        mode = os.stat(tmp).st_mode & 0o777  # 0666 less the umask; safetensors' writer recreates the file 0600
        write(str(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def file_kind(path: str | Path) -> str:
    """``safetensors``, ``torch`` (a ``torch.save`` zip or legacy pickle) or ``unknown``,
    from the file's first bytes: weight files are told apart by content, never by suffix.

    The safetensors test comes first: its 8-byte header length is any number, so its first
    byte may well be ``0x80`` (a pickle's first byte); a pickle never has ``{`` as its ninth
    byte with a length that fits the file."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: 8-byte little-endian header length, then JSON
        header_length = int.from_bytes(head[:8], "little")
        if 2 <= header_length <= Path(path).stat().st_size - 8:
            return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    return "unknown"


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left for ``path`` when a process was
    killed mid-write; call it only when no other process is writing ``path``. Returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob_escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
