"""Errors in what the user set, as opposed to bugs: the command-line entry points report
them in one line (``mtpg_aiaa/engine/cli_errors.py``). Problems in user files are ``data.errors.BadInputError``;
in weight files ``CheckpointError`` (also importable from ``backbone.convert``, its old home).
This module imports nothing, so entry points can name these errors without loading torch."""


class SettingError(ValueError):
    """A setting (config key or command-line option) that cannot work; the message names the key."""


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the model; names the file and keys."""
