"""The dataset catalogue: converters from each set's own released files to the canonical
table (``image``, ``score`` on the set's scale, ``score_0_10``, optional ``dist_1..dist_K``
vote counts, ``split``, and any named text columns).

Each converter module registers ``@register_dataset(name)`` on a function
``convert(root: Path, <named options>) -> pandas.DataFrame``; ``scripts/prepare_dataset.py NAME
--root DIR`` writes the table. Modules in ``CONVERTER_MODULES`` load on the first look-up.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from .options import checked_options

_CONVERTERS: dict[str, Callable[..., Any]] = {}
_loaded = False


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(convert: Callable[..., Any]) -> Callable[..., Any]:
        if name in _CONVERTERS and _CONVERTERS[name].__wrapped__ is not convert:
            raise ValueError(f"dataset {name!r} is registered twice")
        _CONVERTERS[name] = checked_options(name, convert)  # typos and wrong types refused in one line
        return convert

    return decorator


def _load_converters() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def list_datasets() -> list[str]:
    _load_converters()
    return sorted(_CONVERTERS)


def get_converter(name: str) -> Callable[..., Any]:
    _load_converters()
    if name not in _CONVERTERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(_CONVERTERS)) or 'none'}")
    return _CONVERTERS[name]
