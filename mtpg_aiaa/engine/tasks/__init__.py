"""The task registry: ``<system>/<task>`` names (``mtpg/pretrain``, ``cgiaa/expert``,
``aesnet/probe``) mapped to ``build(cfg, model) -> Task`` functions (see ``trainer.Task``).

Tasks register with ``@register_task(name)`` in their module; the modules listed in
``TASK_MODULES`` are imported on the first look-up.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TASK_MODULES = (
    "mtpg_aiaa.engine.tasks.mtpg",
    "mtpg_aiaa.engine.tasks.cgiaa",
    "mtpg_aiaa.engine.tasks.aesnet",
)

_TASKS: dict[str, Callable[..., Any]] = {}
_loaded = False


def register_task(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if name.count("/") != 1:
        raise ValueError(f"task names are '<system>/<task>', got {name!r}")

    def decorator(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TASKS and _TASKS[name] is not build:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = build
        return build

    return decorator


def _load_tasks() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in TASK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def list_tasks() -> list[str]:
    _load_tasks()
    return sorted(_TASKS)


def get_task_builder(name: str) -> Callable[..., Any]:
    _load_tasks()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered: {', '.join(sorted(_TASKS)) or 'none'}")
    return _TASKS[name]
