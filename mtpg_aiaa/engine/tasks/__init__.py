"""The task registry: ``<system>/<task>`` names (``mtpg/pretrain``, ``cgiaa/expert``,
``aesnet/probe``) and the function that builds each (``build(model, ...) -> Task``, see
``trainer.Task``).

A task is said in one place, its config file: every ``task/<system>/<task>.yaml`` in the config
folder of a registered system (``models/registry.py``: this package's ``configs/``, or an
outside system's own) is a task, and its ``task._target_`` is its builder, which ``train.py``
instantiates with ``model=``. Listing the tasks reads file names only, importing nothing.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import SettingError
from ...models.registry import systems


def list_tasks() -> list[str]:
    """Every registered system's task names, from its ``task/<system>/*.yaml`` files (no import)."""
    return sorted(name for spec in systems().values() for name in spec.task_names())


def task_config_file(name: str) -> Path:
    """The config file of task ``<system>/<task>``; a one-line error listing the tasks otherwise."""
    system, _, task = name.partition("/")
    spec = systems().get(system)
    path = spec.config_dir / "task" / system / f"{task}.yaml" if spec is not None and task else None
    if path is None or not path.is_file():
        raise SettingError(f"unknown task {name!r}; registered: {', '.join(list_tasks()) or 'none'}")
    return path


def get_task_builder(name: str) -> Callable[..., Any]:
    """The builder task ``name``'s config names in ``task._target_`` (imported now); a task file
    that extends another (``defaults: [/task/<system>/<task>]``, the AesNet probe) inherits it."""
    from hydra.utils import get_method
    from omegaconf import OmegaConf

    path = task_config_file(name)
    config = OmegaConf.load(path)
    target = (config.get("task") or {}).get("_target_")
    if target:
        return get_method(target)
    parents = [str(d) for d in config.get("defaults") or [] if isinstance(d, str) and str(d).startswith("/task/")]
    if not parents:
        raise SettingError(f"{path}: task._target_ is missing (the task's builder)")
    return get_task_builder(parents[0].removeprefix("/task/"))
