"""Errors in what the user set, as opposed to bugs: the command-line entry points report
them in one line (``mtpg_aiaa/engine/cli_errors.py``). Problems in user files are ``data.errors.BadInputError``;
in weight files ``backbone.convert.CheckpointError``. An output the disk refused (full, quota,
read-only) is ``OutputWriteError``: one line too, exit 1 (not the user's input)."""


class SettingError(ValueError):
    """A setting (config key or command-line option) that cannot work; the message names the key."""


class OutputWriteError(OSError):
    """An output file could not be written (disk full, quota, read-only); the message names it."""
