"""Byte-compile, once, the modules that train.py, test.py and demo.py import (make install).

The Makefile installs with ``pip --no-compile``: byte-compiling all of torch, transformers
& co. made a fresh install 2-3 minutes longer. Python then compiles a module when it is
first imported and keeps the result in ``__pycache__`` -- unless ``PYTHONDONTWRITEBYTECODE``
is set, as it is in some containers: there every command compiled the ~3,400 modules it
imports from source again, about 8 CPU seconds per process before any work
(docs/method.md, "Speed"). This process writes the ``.pyc`` files whatever that variable
says, for exactly the modules those commands import (at start-up, and the few they import
while running), so later processes only read them. It changes no computation.

    python scripts/precompile.py
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = False  # this process writes the .pyc files (the module docstring says why)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train.py", "test.py", "demo.py")
# Imported inside functions on the quickstart's path (checkpoints, plots, metrics, Hydra's
# launcher and config machinery), so importing the commands alone does not reach them.
RUN_TIME_IMPORTS = (
    "safetensors.torch", "matplotlib.backends.backend_agg", "matplotlib.figure", "scipy.stats",
    "hydra._internal.hydra", "hydra._internal.core_plugins.basic_launcher",
    "hydra._internal.core_plugins.basic_sweeper", "hydra._internal.config_loader_impl",
    "hydra.core.utils", "hydra.utils", "multiprocessing.pool", "PIL.JpegImagePlugin", "PIL.PngImagePlugin",
)  # fmt: skip


def main() -> None:
    start, before = time.perf_counter(), len(sys.modules)
    sys.path.insert(0, str(ROOT))
    for command in COMMANDS:
        spec = importlib.util.spec_from_file_location(f"precompile_{Path(command).stem}", ROOT / command)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # module level only: no main()
    for name in RUN_TIME_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as error:  # a version without that module: nothing to compile
            print(f"precompile: skipped {name} ({error})")
    # load_model offers a file to every system's recognizes(), which imports every system
    # (CG-IAA's brings transformers' GPT-2); the registry itself imports them only then.
    from mtpg_aiaa.models.registry import entries

    for entry in entries():
        for function in (entry.build, entry.load, entry.recognizes):
            assert function is None or callable(function), entry.name
    # Hydra composes the config through plugins it discovers at run time (launchers, sweepers).
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        compose("train", overrides=["experiment=quickstart"])
    print(f"precompile: {len(sys.modules) - before} modules imported and byte-compiled "
          f"in {time.perf_counter() - start:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
