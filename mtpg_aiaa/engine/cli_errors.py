"""How the command-line entry points end: one line for a known error, a traceback otherwise.

A known error is a problem with what the user gave (a file, a row, a setting); its message
already names the culprit, so the 12-50 lines of traceback Hydra would print above it only
hide it. Such errors print ``error: <message>`` on one line and exit with status 2 (as
argparse does for bad arguments). An interrupted training prints how to resume and exits
128 + the signal's number, as a shell reports a process ended by that signal. Anything
else is a bug and keeps its full traceback (so does everything with ``HYDRA_FULL_ERROR=1``).
"""
from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from collections.abc import Callable

from omegaconf.errors import MissingMandatoryValue

from ..backbone.convert import CheckpointError
from ..data.errors import BadInputError
from .trainer import NonFiniteLossError, TrainingInterrupted
from ..errors import SettingError

EXIT_INPUT_ERROR = 2
EXIT_FAILED = 1
KNOWN_INPUT_ERRORS = (BadInputError, CheckpointError, SettingError, MissingMandatoryValue)

log = logging.getLogger(__name__)


def one_line(error: BaseException) -> str:
    """The message on one line: a line ending in ``:`` runs into the next, others join with ``; ``."""
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a setting"
        return f"missing mandatory value {key}: set it on the command line ({key}=...)"
    text = ""
    for line in (part.strip() for part in str(error).splitlines()):
        if not line:
            continue
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text or type(error).__name__


def resume_command(run_name: str | None, argv: list[str] | None = None) -> str:
    """The command that continues this run: the same arguments, the run's name fixed, ``resume=auto``."""
    argv = list(sys.argv if argv is None else argv)
    kept = [arg for arg in argv[1:] if not arg.startswith(("run_name=", "resume="))]
    script = os.path.basename(argv[0]) if argv else "train.py"
    named = [f"run_name={run_name}"] if run_name else []
    return shlex.join(["python", script, *kept, *named, "resume=auto"])


def one_line_errors(main: Callable) -> Callable:
    """Decorate a Hydra ``main(cfg)``: known errors end in one line and exit 2 (see module doc)."""

    @functools.wraps(main)
    def wrapper(cfg, *args, **kwargs):
        full = os.environ.get("HYDRA_FULL_ERROR") == "1"
        try:
            return main(cfg, *args, **kwargs)
        except TrainingInterrupted as stop:
            run_name = cfg.get("run_name") if hasattr(cfg, "get") else None
            print(f"{stop}; resume with: {resume_command(run_name)}", file=sys.stderr)
            sys.exit(stop.exit_code)
        except KNOWN_INPUT_ERRORS as error:
            if full:
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_INPUT_ERROR)
        except NonFiniteLossError as error:
            if full:
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_FAILED)

    return wrapper
