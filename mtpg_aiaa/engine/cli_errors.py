"""How the command-line entry points end: one line for a known error, a traceback otherwise.

A known error is a problem with what the user gave (a file, a row, a setting); its message
already names the culprit, so the 12-50 lines of traceback Hydra would print above it only
hide it. Such errors print ``error: <message>`` on one line and exit with status 2 (as
argparse does for bad arguments). An interrupted training prints how to resume and exits
128 + the signal's number, as a shell reports a process ended by that signal. Anything
else is a bug and keeps its full traceback (so does everything with ``HYDRA_FULL_ERROR=1``).

Hydra's own errors (an unknown ``task=``, a config key that does not exist, an override
that does not parse) happen before ``main`` runs. ``run_main(main)`` calls the
``@hydra.main`` function as it is (its launchers, SLURM included, keep working) with
``HYDRA_FULL_ERROR=1`` so that Hydra raises them instead of printing them over several
lines, and prints them in one line, exit 2. A failed run leaves no run folder holding only
Hydra's and our config files (``remove_empty_run_dir``).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.errors import CompactHydraException, InstantiationException
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from ..backbone.convert import CheckpointError
from ..data.errors import BadInputError
from .trainer import NonFiniteLossError, TrainingInterrupted
from ..errors import OutputWriteError, SettingError, one_line_message, worker_message  # noqa: F401 (re-exported)

EXIT_INPUT_ERROR = 2
EXIT_FAILED = 1
KNOWN_INPUT_ERRORS = (BadInputError, CheckpointError, SettingError, MissingMandatoryValue,
                      InterpolationToMissingValueError)

# Set beside HYDRA_FULL_ERROR by run_main: the full errors are ours to print, not the user's request.
FULL_ERROR_BY_US = "MTPG_HYDRA_FULL_ERROR_SET_BY_RUN_MAIN"
# What a run writes before its work starts; a failed run's folder holding only these goes.
RUN_START_FILES = frozenset({".hydra", "config.yaml", "test_config.yaml", "describe_config.yaml"})

log = logging.getLogger(__name__)


def one_line(error: BaseException) -> str:
    """The message on one line (``errors.one_line_message``), with Hydra's missing values spelled out."""
    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or "a setting"
        return f"missing mandatory value {key}: set it on the command line ({key}=...)"
    if isinstance(error, InterpolationToMissingValueError):  # data.csv: ${data.root}/... with data.root unset
        missing = re.search(r"Missing mandatory value: ([\w.]+)", str(error))
        key, needed_by = (missing.group(1) if missing else "a setting"), getattr(error, "full_key", None) or "a setting"
        return (f"missing mandatory value {key} (needed by {needed_by}): set it on the command line ({key}=...); "
                "to try the toolkit without data: python train.py experiment=quickstart_pretrain (README)")
    return one_line_message(error)


def hydra_one_line(error: CompactHydraException) -> str:
    """Hydra's composition error on one line: its message, the options it lists, the cause."""
    lines = [line.strip() for line in str(error).splitlines()]
    if "Config search path:" in lines:  # where Hydra looked: our own configs folder
        lines = lines[: lines.index("Config search path:")]
    parts: list[str] = []
    for line in filter(None, lines):
        if parts and parts[-1].startswith("Available options in") and " " not in line:
            parts[-1] += ("" if parts[-1].endswith(":") else ",") + " " + line  # one option per line in Hydra's text
        else:
            parts.append(line)
    text = ""
    for part in parts:  # a sentence that ended runs on; a bare line is joined with "; "
        text += part if not text else (" " if text.endswith((".", ":")) else "; ") + part
    if error.__cause__ is not None:
        text += f" ({str(error.__cause__).splitlines()[0].strip()})"
    return text or type(error).__name__


def run_main(hydra_main: Callable[[], None]) -> None:
    """Call a ``@hydra.main`` function (``if __name__ == "__main__": run_main(main)``); Hydra's
    own errors end in one line and exit 2 (see the module doc)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(FULL_ERROR_BY_US) != "1":
        hydra_main()  # the user asked for Hydra's full errors
        return
    os.environ["HYDRA_FULL_ERROR"] = os.environ[FULL_ERROR_BY_US] = "1"
    try:
        hydra_main()
    except InstantiationException:
        raise  # a constructor failed: may be a bug, keeps its traceback
    except CompactHydraException as error:
        print(f"error: {hydra_one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_INPUT_ERROR)


def remove_empty_run_dir() -> Path | None:
    """After a failed run: the Hydra run folder, removed when it holds nothing but what every
    run writes at its start (a lock, a checkpoint or any result keeps it); returns it if removed."""
    try:
        from hydra.core.hydra_config import HydraConfig

        run_dir = Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra (tests call the wrapped function directly)
        return None
    if not run_dir.is_dir():
        return None
    names = {path.name for path in run_dir.iterdir()}
    if any(name not in RUN_START_FILES and not name.endswith(".log") for name in names):
        return None
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


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
        full = os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(FULL_ERROR_BY_US) != "1"
        try:
            return main(cfg, *args, **kwargs)
        except TrainingInterrupted as stop:
            run_name = cfg.get("run_name") if hasattr(cfg, "get") else None
            print(f"{stop}; resume with: {resume_command(run_name)}", file=sys.stderr)
            sys.exit(stop.exit_code)
        except KNOWN_INPUT_ERRORS as error:
            remove_empty_run_dir()
            if full:
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_INPUT_ERROR)
        except OutputWriteError as error:  # a full disk: not a bug, and not the user's input
            if full:
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_FAILED)
        except NonFiniteLossError as error:
            if full:
                raise
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(EXIT_FAILED)

    return wrapper
