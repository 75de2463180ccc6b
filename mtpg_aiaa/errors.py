"""Errors in what the user gave, as opposed to bugs: the command-line entry points report
them in one line, exit 2 (``mtpg_aiaa/engine/cli_errors.py``). Problems in user files are
``data.errors.BadInputError``; in weight files ``CheckpointError`` (also importable from
``backbone.convert`` and ``backbone.weights_file``); in settings ``SettingError``. All three
share ``InputError``. An output the disk refused (full, quota, read-only) is
``OutputWriteError``: one line too, exit 1 (not the user's input).

``one_line_message`` is the one spelling of an error on one line. This module imports nothing
heavy, so entry points and scripts name these errors without loading torch."""
from __future__ import annotations

import re


class InputError(ValueError):
    """The base of every problem in what a user gave (a file, a setting): entry points print
    it as one line (exit 2); anything else is a bug and keeps its traceback."""


class SettingError(InputError):
    """A setting (config key or command-line option) that cannot work; the message names the key."""


class CheckpointError(InputError):
    """A weights file that cannot be read or does not fit the model; names the file and keys."""


class OutputWriteError(OSError):
    """An output file could not be written (disk full, quota, read-only); the message names it."""


def worker_message(text: str) -> str:
    """The original message of an error a DataLoader worker re-raised in the main process
    (torch puts the worker's whole traceback into it); other messages as they are."""
    caught = re.match(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback", text)
    if not caught:
        return text
    marker = f"{caught.group(1)}: "
    start = text.rfind(marker)
    return text[start + len(marker):] if start >= 0 else text


def one_line_message(error: BaseException) -> str:
    """``error``'s message on one line: a line ending in ``:`` runs into the next, others
    join with ``; ``; a DataLoader worker's traceback is dropped (``worker_message``)."""
    text = ""
    for line in (part.strip() for part in worker_message(str(error)).splitlines()):
        if not line:
            continue
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text or type(error).__name__
