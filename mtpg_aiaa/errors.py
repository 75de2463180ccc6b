"""Errors in what the user set, as opposed to bugs: the command-line entry points report
them in one line (``mtpg_aiaa/engine/cli_errors.py``). Problems in user files are ``data.errors.BadInputError``;
in weight files ``backbone.convert.CheckpointError``; all three share ``InputError``."""


class InputError(ValueError):
    """The base of every problem in what a user gave (a file, a setting): entry points print
    it as one line (exit 2); anything else is a bug and keeps its traceback."""


class SettingError(InputError):
    """A setting (config key or command-line option) that cannot work; the message names the key."""

