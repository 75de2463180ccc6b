"""The image files of a folder, and the entries that look like images but cannot be read.

A plain ``glob`` with ``is_file()`` drops a dangling symlink, a symlink loop or a FIFO
without a word, so a user sees "scored 8 of 12" and cannot tell which four went missing;
worse, opening a FIFO named ``x.jpg`` blocks forever. Here every such entry is listed with
its reason, a symlinked folder that leads back into the walk is entered once, and nothing
is opened: only ``stat`` is called.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def list_image_files(folder: str | os.PathLike, recursive: bool = False,
                     suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[list[Path], list[tuple[Path, str]]]:  # fmt: skip
    """The regular files under ``folder`` whose suffix is in ``suffixes`` (case-insensitive),
    sorted by path, and ``(path, reason)`` for every entry with such a suffix that is not one:
    a dangling symlink, a symlink loop, a FIFO, socket or device, a folder, an unreadable
    folder (when ``recursive``), or a symlinked folder already walked (a loop).

    Symlinks to regular files are followed (the link's path is listed), as a shell glob does.
    """
    folder = Path(folder)
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []
    seen_dirs: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            info = current.stat()
        except OSError as error:
            refused.append((current, f"unreadable folder ({error.strerror})"))
            continue
        if (info.st_dev, info.st_ino) in seen_dirs:
            refused.append((current, "a symlink loop: this folder was already listed"))
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError as error:
            refused.append((current, f"unreadable folder ({error.strerror})"))
            continue
        for entry in entries:
            path = Path(entry.path)
            wanted = path.suffix.lower() in suffixes
            try:
                mode = entry.stat(follow_symlinks=True).st_mode
            except OSError as error:
                if wanted or entry.is_symlink():
                    if error.errno == errno.ELOOP:
                        refused.append((path, "a symlink loop"))
                    elif entry.is_symlink() and error.errno == errno.ENOENT:
                        refused.append((path, f"a dangling symlink (to {os.readlink(path)})"))
                    else:
                        refused.append((path, f"cannot be read ({error.strerror})"))
                continue
            if stat.S_ISDIR(mode):
                if recursive:
                    pending.append(path)
                elif wanted:
                    refused.append((path, "a folder"))
            elif wanted and stat.S_ISREG(mode):
                files.append(path)
            elif wanted:
                refused.append((path, _kind(mode)))
    return sorted(files), sorted(refused)
