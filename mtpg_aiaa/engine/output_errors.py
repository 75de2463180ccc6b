"""A write that the disk refused, told in one line naming the file the run meant to write.

``atomic_write`` writes a temporary file first, so the error a full disk raises names
``.last.pt.1a2b3c4d.tmp`` (an ``OSError``), or nothing at all: ``torch.save``'s zip writer
turns ENOSPC into ``RuntimeError: PytorchStreamWriter failed writing file data/0``. Either
way the previous checkpoint is intact (the temporary file is removed); the user needs to
know which file could not be written and why, not the writer's internals.
"""
from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputWriteError

# errno values that say "the place cannot take this file", not "the program is wrong"
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EIO: "input/output error", errno.EFBIG: "file too large"}  # fmt: skip
TORCH_WRITER_FAILURES = ("PytorchStreamWriter failed", "file write failed")


def free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}"
    except OSError:
        return f"free space in {folder} unknown"


@contextmanager
def explain_write_failure(path: str | Path) -> Iterator[None]:
    """Around a write of ``path``: a disk refusal becomes ``OutputWriteError`` naming ``path``."""
    path = Path(path)
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            raise
        reason = f"{DISK_ERRNOS[error.errno]} ({error.strerror})"
        raise OutputWriteError(f"cannot write {path}: {reason}; {free_space(path.parent)}; "
                               "the previous file, if any, is unchanged") from error  # fmt: skip
    except RuntimeError as error:
        if not any(marker in str(error) for marker in TORCH_WRITER_FAILURES):
            raise
        raise OutputWriteError(f"cannot write {path}: the write failed (a full disk?); {free_space(path.parent)}; "
                               "the previous file, if any, is unchanged") from error  # fmt: skip
