"""Converter options checked against the converter's signature before any file is read.

``prepare_dataset.py --option KEY=VALUE`` passes options as keyword arguments; a typo
(``val_fracton=0.2``) used to vanish into ``**options`` and the default was used, and a
value of the wrong type (``val_fraction=abc``) ended in a traceback deep in the converter.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from ...errors import SettingError


def _kinds(hint: Any) -> tuple[type, ...]:
    """The plain types an annotation allows (``float | None`` -> ``(float, NoneType)``)."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(arg if isinstance(arg, type) else object for arg in args)


def check_option(dataset: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` as the option ``key`` takes it (an int where a float is wanted becomes a float),
    or ``SettingError`` naming the option, the type wanted and the value given."""
    kinds = _kinds(hint)
    if object in kinds or isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wanted = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
    raise SettingError(f"{dataset}: option {key} wants {wanted}, got {value!r}")


def checked_options(dataset: str, convert: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``convert(root, **options)``: an unknown option is refused naming the valid ones,
    a value of the wrong type naming the type (``SettingError``, one line)."""
    signature = inspect.signature(convert)
    hints = typing.get_type_hints(convert)
    names = [name for name in signature.parameters if name != "root"]

    @functools.wraps(convert)
    def wrapper(root, **options: Any) -> Any:
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise SettingError(f"{dataset}: unknown option(s) {', '.join(unknown)}; "
                               f"valid options: {', '.join(names) or 'none'}")  # fmt: skip
        options = {key: check_option(dataset, key, value, hints.get(key, object)) for key, value in options.items()}
        return convert(root, **options)

    wrapper.options = tuple(names)
    return wrapper
