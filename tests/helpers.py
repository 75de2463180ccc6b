"""Plain helpers shared by the tests; the shared fixtures are in ``conftest.py``.

The repository's commands (``train.py``, ``test.py``, ``demo.py``, ``scripts/*.py``) are
not part of the installed package, so tests load them by file path. By path, not through
``sys.path``: a top-level ``test.py`` on ``sys.path`` would shadow Python's own ``test``
package, and ``scripts/`` is not a package.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# The project's real BAID labels and paintings, beside the repository (absent outside the
# project's CI; MTPG_SHARED_DIR points elsewhere, e.g. from a git worktree).
SHARED = Path(os.environ.get("MTPG_SHARED_DIR", ROOT.parent / "shared"))
PAINTINGS = SHARED / "data" / "paintings"


def load_script(relative_path: str) -> ModuleType:
    """The command at ``ROOT / relative_path`` as a module (loaded once per test session).

    Registered in ``sys.modules`` (as ``repo_script_<path>``, no dots) so objects it defines pickle."""
    name = "repo_script_" + relative_path.removesuffix(".py").replace("/", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def compose_config(name: str, *overrides: str):
    """The composed config ``configs/<name>.yaml`` with Hydra overrides."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def tiny_train_overrides(smoke: dict, out: Path, *extra: str) -> list[str]:
    """A two-step training of the tiny model on the smoke data, written under ``out``."""
    return [
        "model=tiny", "data=csv", f"data.train_csv={smoke['csv']}", f"data.val_csv={smoke['csv']}",
        f"data.image_root={smoke['image_root']}", "debug=fast", "trainer.batch_size=4",
        "sched.warmup_steps=1", "optim.backbone_lr=1e-4", "optim.head_lr=1e-3",
        f"paths.output_root={out}", "run_name=run", *extra,
    ]  # fmt: skip


def train_preempted(train: Callable, cfg, monkeypatch: pytest.MonkeyPatch, at_step: int = 2) -> None:
    """``train(cfg)``, with SIGTERM's stop request raised right after optimizer step
    ``at_step``: the trainer writes last.pt and returns, as on a cluster's pre-emption."""
    from mtpg_aiaa.engine import trainer as trainer_module

    original_step = trainer_module.Trainer._optimizer_step

    def preempt(self):
        original_step(self)
        if self.step == at_step:
            self._stop_signal = signal.SIGTERM

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module.Trainer, "_optimizer_step", preempt)
        train(cfg)
