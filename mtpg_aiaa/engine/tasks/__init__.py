"""The task registry: ``<system>/<task>`` names (``mtpg/pretrain``, ``cgiaa/expert``,
``aesnet/probe``) mapped to ``build(cfg, model) -> Task`` functions (see ``trainer.Task``).

The names come from the configs: every ``task/<system>/<task>.yaml`` in the config folder of
each registered system (``models/registry.py``: this package's ``configs/``, or an outside
system's own), so listing them imports nothing. The builders come from the module each
system's ``system.json`` names as ``tasks``; it registers them with ``@register_task(name)``
and is imported the first time one of that system's tasks is asked for.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ...errors import SettingError
from ...models.registry import systems

_TASKS: dict[str, Callable[..., Any]] = {}
_imported: set[str] = set()


def register_task(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if name.count("/") != 1:
        raise ValueError(f"task names are '<system>/<task>', got {name!r}")

    def decorator(build: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TASKS and _TASKS[name] is not build:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = build
        return build

    return decorator


def list_tasks() -> list[str]:
    """Every registered system's task names, from its ``task/<system>/*.yaml`` files (no import)."""
    return sorted(name for spec in systems().values() for name in spec.task_names())


def _import_task_module(system: str) -> None:
    spec = systems().get(system)
    if spec is None or spec.tasks is None or system in _imported:
        return
    importlib.import_module(spec.tasks)
    _imported.add(system)


def get_task_builder(name: str) -> Callable[..., Any]:
    """The ``build(cfg, model)`` of task ``name``; importing its system's task module on first use."""
    _import_task_module(name.partition("/")[0])
    if name not in _TASKS:
        known = sorted(set(list_tasks()) | set(_TASKS))
        raise SettingError(f"unknown task {name!r}; registered: {', '.join(known) or 'none'}")
    return _TASKS[name]
